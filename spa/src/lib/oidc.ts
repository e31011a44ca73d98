// Sign-in through an external OpenID Connect provider (Keycloak or any other): authorization code flow with PKCE,
// renewal with the provider's refresh token, and sign-out at the provider (revocation, end_session) — oidc-client-ts.
import { ErrorResponse, type User, UserManager, WebStorageStateStore } from "oidc-client-ts";
import {
  AuthError,
  decodeClaims,
  type ExternalIdentity,
  refresh,
  type Session,
  setExternalIdentity,
  setSession,
} from "@/lib/session";

export interface OidcConfig {
  issuer: string;
  client_id: string;
  scopes: string[];
}

/** Where the provider sends the browser back: the app's callback page and, after signing out, its sign-in page. */
export const CALLBACK_PATH = "/app/auth/callback";
export const SIGNED_OUT_PATH = "/app/login";

let manager: UserManager | null = null;
let managerKey = "";
let callback: { url: string; done: Promise<{ session: Session; from?: string }> } | null = null;

function sessionOf(user: User): Session {
  const claims = decodeClaims(user.access_token);
  return {
    accessToken: user.access_token,
    refreshToken: "",
    expiresAt: (user.expires_at ?? claims.exp) * 1000,
    claims,
  };
}

function requireManager(): UserManager {
  if (!manager) throw new AuthError("single sign-on is not set up", 0, "oidc_not_configured");
  return manager;
}

function asAuthError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof ErrorResponse) {
    return new AuthError(err.error_description ?? err.error ?? "the identity provider refused", 401, err.error ?? "error");
  }
  return new AuthError(`The identity provider cannot be reached (${(err as Error).message}).`, 0, "network");
}

/** Sets up the provider's client and routes session renewal and sign-out through it. */
export function startOidc(config: OidcConfig, origin: string = window.location.origin): UserManager {
  const key = JSON.stringify([config.issuer, config.client_id, config.scopes, origin]);
  const um = manager && managerKey === key ? manager : createManager(config, origin);
  manager = um;
  managerKey = key;
  setExternalIdentity(identityOf(um));
  // A session from before a reload: the access token is renewed on first use if it has expired meanwhile.
  void um.getUser().then((user) => {
    if (user) setSession(sessionOf(user));
  });
  return um;
}

function createManager(config: OidcConfig, origin: string): UserManager {
  const um = new UserManager({
    authority: config.issuer,
    client_id: config.client_id,
    redirect_uri: origin + CALLBACK_PATH,
    post_logout_redirect_uri: origin + SIGNED_OUT_PATH,
    response_type: "code",
    scope: config.scopes.join(" "),
    // Renewal goes through session.refresh(), one at a time: a refresh token works once (Keycloak revokes reused
    // ones), so the library's own timer must not race with a request that renews.
    automaticSilentRenew: false,
    // The tokens stay in this tab, like the built-in identity's.
    userStore: new WebStorageStateStore({ store: window.sessionStorage }),
    stateStore: new WebStorageStateStore({ store: window.sessionStorage }),
  });
  // Renew shortly before the access token expires, even while nothing is being loaded.
  um.events.addAccessTokenExpiring(() => {
    refresh().catch(() => undefined);
  });
  return um;
}

function identityOf(um: UserManager): ExternalIdentity {
  return {
    async renew() {
      const user = await um.getUser();
      if (!user?.refresh_token) throw new AuthError("Your session has ended. Please sign in again.", 401, "unauthorized");
      try {
        const renewed = await um.signinSilent();
        if (!renewed) throw new AuthError("Your session has ended. Please sign in again.", 401, "unauthorized");
        return sessionOf(renewed);
      } catch (err) {
        throw asAuthError(err);
      }
    },
    async signOut() {
      const metadata = await um.metadataService.getMetadata().catch(() => null);
      if (metadata?.revocation_endpoint) {
        await um.revokeTokens(["refresh_token"]).catch(() => undefined);
      }
      if (metadata?.end_session_endpoint) {
        await um.signoutRedirect(); // the provider ends its session and sends the browser to SIGNED_OUT_PATH
        return;
      }
      await um.removeUser();
    },
    forget() {
      void um.removeUser();
    },
  };
}

/** Leave for the provider's sign-in page; `from` is the app page to return to. */
export async function beginSignIn(from?: string): Promise<void> {
  await requireManager().signinRedirect({ state: { from } });
}

/** Finish the sign-in on the callback page (once per callback URL, however often the page renders). */
export function completeSignIn(url: string = window.location.href): Promise<{ session: Session; from?: string }> {
  if (callback?.url === url) return callback.done;
  const done = requireManager()
    .signinRedirectCallback(url)
    .then((user) => {
      const session = sessionOf(user);
      setSession(session);
      const from = (user.state as { from?: string } | undefined)?.from;
      return { session, from };
    })
    .catch((err: unknown) => {
      throw asAuthError(err);
    });
  callback = { url, done };
  return done;
}

/** After the provider signed the browser out: forget the sign-out request it answers (if any). */
export async function completeSignOut(url: string = window.location.href): Promise<void> {
  if (!manager || !new URL(url).searchParams.has("state")) return;
  await manager.signoutCallback(url).catch(() => undefined);
}
