import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ApiError, api, buildUrl } from "@/lib/api";
import { getSession, login, logout } from "@/lib/session";

function jwt(claims: object): string {
  const b64 = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "ES256", kid: "k" })}.${b64(claims)}.sig`;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

const pair = (n: number) => ({
  access_token: jwt({ sub: "u1", email: "ada@example.com", tenant_id: "acme", roles: ["tenant-admin"], exp: 9e9, n }),
  refresh_token: `rt_${n}`,
  expires_in: 900,
});

describe("api client", () => {
  const fetchMock = vi.fn<typeof fetch>();
  beforeEach(() => {
    vi.stubGlobal("fetch", fetchMock);
    fetchMock.mockReset();
  });
  afterEach(() => vi.unstubAllGlobals());

  test("query values: lists repeat, empty values are left out", () => {
    expect(buildUrl("/api/v2/devices", { state: ["ONLINE", "STALE"], q: "", site_id: null, limit: 50 })).toBe(
      "/api/v2/devices?state=ONLINE&state=STALE&limit=50",
    );
  });

  test("the error envelope becomes an ApiError naming the field", async () => {
    fetchMock.mockResolvedValueOnce(json(200, pair(1)));
    await login("ada@example.com", "pw");
    fetchMock.mockResolvedValueOnce(
      json(400, { error: { code: "validation_error", message: "must be 1-5", details: { field: "severity" } } }, { "x-request-id": "r-1" }),
    );
    const err = await api("/customer/alert-rules", { method: "POST", body: { severity: 9 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).code).toBe("validation_error");
    expect((err as ApiError).field).toBe("severity");
    expect((err as ApiError).details.request_id).toBe("r-1");
    const [, init] = fetchMock.mock.calls[1];
    expect((init?.headers as Record<string, string>).authorization).toBe(`Bearer ${pair(1).access_token}`);
    expect(init?.body).toBe(JSON.stringify({ severity: 9 }));
  });

  test("a refused access token is refreshed once and the request sent again", async () => {
    fetchMock.mockResolvedValueOnce(json(200, pair(1)));
    await login("ada@example.com", "pw");
    fetchMock
      .mockResolvedValueOnce(json(401, { error: { code: "invalid_token", message: "expired" } }))
      .mockResolvedValueOnce(json(200, pair(2)))
      .mockResolvedValueOnce(json(200, { items: [] }));
    await expect(api("/api/v2/alerts")).resolves.toEqual({ items: [] });
    expect(fetchMock.mock.calls[2][0]).toBe("/auth/refresh");
    expect(JSON.parse(String(fetchMock.mock.calls[2][1]?.body))).toEqual({ refresh_token: "rt_1" });
    expect((fetchMock.mock.calls[3][1]?.headers as Record<string, string>).authorization).toBe(`Bearer ${pair(2).access_token}`);
    expect(getSession()?.refreshToken).toBe("rt_2");
  });

  test("a spent refresh token ends the session", async () => {
    fetchMock.mockResolvedValueOnce(json(200, pair(1)));
    await login("ada@example.com", "pw");
    fetchMock
      .mockResolvedValueOnce(json(401, { error: { code: "invalid_token", message: "expired" } }))
      .mockResolvedValueOnce(json(401, { error: { code: "unauthorized", message: "refresh token is not valid" } }));
    const err = await api("/api/v2/alerts").catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(401);
    expect(getSession()).toBeNull();
  });

  test("signing out revokes the refresh token at Pulse before the tokens are dropped", async () => {
    fetchMock.mockResolvedValueOnce(json(200, pair(1)));
    await login("ada@example.com", "pw");
    let signedInDuringRevoke: boolean | undefined;
    fetchMock.mockImplementationOnce(async () => {
      signedInDuringRevoke = getSession() !== null;
      return new Response(null, { status: 204 });
    });
    await logout();
    expect(fetchMock.mock.calls[1][0]).toBe("/auth/logout");
    expect(fetchMock.mock.calls[1][1]?.method).toBe("POST");
    expect(JSON.parse(String(fetchMock.mock.calls[1][1]?.body))).toEqual({ refresh_token: "rt_1" });
    expect(signedInDuringRevoke).toBe(true);
    expect(getSession()).toBeNull();
  });

  test("signing out ends the session here even when Pulse cannot be reached", async () => {
    fetchMock.mockResolvedValueOnce(json(200, pair(1)));
    await login("ada@example.com", "pw");
    fetchMock.mockRejectedValueOnce(new TypeError("Failed to fetch"));
    await logout();
    expect(getSession()).toBeNull();
  });
});
