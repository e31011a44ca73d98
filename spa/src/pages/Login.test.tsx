import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider } from "react-router";
import { afterEach, expect, test, vi } from "vitest";
import { AuthProvider } from "@/lib/auth";
import { setSession } from "@/lib/session";
import type { SignInConfig } from "@/lib/signin";
import Login from "@/pages/Login";

afterEach(() => {
  vi.unstubAllGlobals();
  setSession(null);
});

/** `null`: the provider asks Pulse (GET /auth/config) how to sign in. */
function renderLogin(signIn: SignInConfig | null = { method: "password" }) {
  const router = createMemoryRouter(
    [
      { path: "/login", element: <Login /> },
      { path: "/", element: <p>fleet overview</p> },
      { path: "/operator/noc", element: <p>noc</p> },
    ],
    { initialEntries: ["/login"] },
  );
  render(
    <QueryClientProvider client={new QueryClient()}>
      <AuthProvider signIn={signIn ?? undefined}>
        <RouterProvider router={router} />
      </AuthProvider>
    </QueryClientProvider>,
  );
}

test("a refused login shows the server's message and keeps the form", async () => {
  const fetchMock = vi.fn<typeof fetch>().mockResolvedValue(
    new Response(JSON.stringify({ error: { code: "unauthorized", message: "email or password is not correct" } }), { status: 401 }),
  );
  vi.stubGlobal("fetch", fetchMock);
  renderLogin();
  const user = userEvent.setup();
  const submit = await screen.findByRole("button", { name: "Sign in" });
  expect(submit).toBeDisabled();
  await user.type(screen.getByLabelText("Email"), "ada@example.com");
  await user.type(screen.getByLabelText("Password"), "wrong");
  await user.click(submit);
  expect(await screen.findByRole("alert")).toHaveTextContent("email or password is not correct");
  expect(fetchMock).toHaveBeenCalledWith("/auth/login", expect.objectContaining({ method: "POST", body: JSON.stringify({ email: "ada@example.com", password: "wrong" }) }));
});

test("an operator lands on the NOC after signing in", async () => {
  const b64 = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, "");
  const token = `${b64({ alg: "ES256" })}.${b64({ sub: "op", email: "noc@example.com", roles: ["operator"], exp: 9e9 })}.s`;
  vi.stubGlobal(
    "fetch",
    vi.fn<typeof fetch>().mockResolvedValue(new Response(JSON.stringify({ access_token: token, refresh_token: "rt_1", expires_in: 900 }), { status: 200 })),
  );
  renderLogin();
  const user = userEvent.setup();
  await user.type(await screen.findByLabelText("Email"), "noc@example.com");
  await user.type(screen.getByLabelText("Password"), "secret-password");
  await user.click(screen.getByRole("button", { name: "Sign in" }));
  expect(await screen.findByText("noc")).toBeInTheDocument();
});

test("the app asks Pulse how to sign in and offers single sign-on when a provider is set up", async () => {
  const fetchMock = vi.fn<typeof fetch>().mockResolvedValue(
    new Response(
      JSON.stringify({
        method: "oidc",
        oidc: { issuer: "https://sso.example.com/realms/pulse", client_id: "pulse-web", scopes: ["openid", "email"] },
      }),
      { status: 200 },
    ),
  );
  vi.stubGlobal("fetch", fetchMock);
  renderLogin(null);
  expect(await screen.findByRole("button", { name: "Sign in with SSO" })).toBeEnabled();
  expect(screen.queryByLabelText("Password")).not.toBeInTheDocument();
  expect(fetchMock).toHaveBeenCalledWith("/auth/config", expect.anything());
});

test("without a web app client at the provider, the page says what is missing", async () => {
  renderLogin({ method: "none" });
  expect(await screen.findByRole("alert")).toHaveTextContent("PULSE_OIDC_CLIENT_ID");
  expect(screen.queryByRole("button")).not.toBeInTheDocument();
});

test("a Pulse that cannot say how to sign in shows the error and tries again", async () => {
  const fetchMock = vi
    .fn<typeof fetch>()
    .mockRejectedValueOnce(new TypeError("Failed to fetch"))
    .mockResolvedValue(new Response(JSON.stringify({ method: "password", oidc: null }), { status: 200 }));
  vi.stubGlobal("fetch", fetchMock);
  renderLogin(null);
  expect(await screen.findByRole("alert")).toHaveTextContent("Pulse cannot be reached");
  await userEvent.setup().click(screen.getByRole("button", { name: "Try again" }));
  expect(await screen.findByLabelText("Password")).toBeInTheDocument();
});
