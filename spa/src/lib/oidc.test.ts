import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { startOidc } from "@/lib/oidc";
import { getSession, refresh, setExternalIdentity, setSession } from "@/lib/session";

const ISSUER = "https://sso.example.com/realms/pulse";
const CLIENT = "pulse-web";

function jwt(claims: object): string {
  const b64 = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "RS256", kid: "k" })}.${b64(claims)}.sig`;
}

const claims = (n: number) => ({ sub: "kc-1", email: "ada@acme.example", tenant_id: "acme", roles: ["tenant-admin"], exp: 9e9, n });

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const fetchMock = vi.fn<typeof fetch>();

beforeEach(() => {
  vi.stubGlobal("fetch", fetchMock);
  fetchMock.mockReset();
  // What the callback stored: the provider's tokens in this tab.
  sessionStorage.setItem(
    `oidc.user:${ISSUER}:${CLIENT}`,
    JSON.stringify({ access_token: jwt(claims(1)), refresh_token: "kc-refresh-1", token_type: "Bearer", scope: "openid", profile: { sub: "kc-1" }, expires_at: 9e9 }),
  );
});

afterEach(() => {
  vi.unstubAllGlobals();
  setExternalIdentity(null);
  setSession(null);
});

function provider(tokenAnswer: Response) {
  fetchMock.mockImplementation(async (input) => {
    const url = String(input);
    if (url === `${ISSUER}/.well-known/openid-configuration`) {
      return json(200, { issuer: ISSUER, authorization_endpoint: `${ISSUER}/auth`, token_endpoint: `${ISSUER}/token`, jwks_uri: `${ISSUER}/certs` });
    }
    if (url === `${ISSUER}/token`) return tokenAnswer.clone();
    return json(404, {});
  });
}

test("with single sign-on the session is renewed with the provider's refresh token", async () => {
  provider(json(200, { access_token: jwt(claims(2)), refresh_token: "kc-refresh-2", token_type: "Bearer", expires_in: 300 }));
  startOidc({ issuer: ISSUER, client_id: CLIENT, scopes: ["openid"] }, "https://pulse.example.com");
  await vi.waitFor(() => expect(getSession()?.claims.tenant_id).toBe("acme"));

  const renewed = await refresh();

  expect(renewed.accessToken).toBe(jwt(claims(2)));
  expect(getSession()?.accessToken).toBe(jwt(claims(2)));
  const tokenCall = fetchMock.mock.calls.find(([url]) => String(url) === `${ISSUER}/token`);
  const body = new URLSearchParams(String(tokenCall?.[1]?.body));
  expect(body.get("grant_type")).toBe("refresh_token");
  expect(body.get("refresh_token")).toBe("kc-refresh-1");
  expect(body.get("client_id")).toBe(CLIENT);
});

test("a renewal the provider refuses ends the session in this tab", async () => {
  provider(json(400, { error: "invalid_grant", error_description: "Session not active" }));
  startOidc({ issuer: ISSUER, client_id: CLIENT, scopes: ["openid"] }, "https://pulse.example.com");
  await vi.waitFor(() => expect(getSession()).not.toBeNull());

  await expect(refresh()).rejects.toMatchObject({ status: 401 });

  expect(getSession()).toBeNull();
  await vi.waitFor(() => expect(sessionStorage.getItem(`oidc.user:${ISSUER}:${CLIENT}`)).toBeNull());
});
