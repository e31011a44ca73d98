// The signed-in session, kept per browser tab (sessionStorage) and refreshed once at a time. Its tokens come from
// Pulse's built-in identity (POST /auth/login, /auth/refresh, /auth/logout) or, when Pulse is set up with an external
// OIDC provider, from that provider: lib/oidc.ts then plugs its renewal and sign-out in with `setExternalIdentity`.

export interface Claims {
  sub: string;
  email?: string;
  tenant_id?: string;
  roles: string[];
  exp: number;
}

export interface Session {
  accessToken: string;
  /** The built-in identity's refresh token; empty with an external provider (its client library keeps that). */
  refreshToken: string;
  /** Epoch milliseconds when the access token expires. */
  expiresAt: number;
  claims: Claims;
}

interface TokenPair {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

const KEY = "pulse.session";
const OPERATOR_ROLES = ["operator", "operator-admin"];
const TENANT_ROLES = ["customer", "tenant-admin"];

/** How an external identity provider renews and ends sessions (lib/oidc.ts). */
export interface ExternalIdentity {
  /** A fresh session (e.g. with the provider's refresh token); rejects with an AuthError (status 0: unreachable). */
  renew(): Promise<Session>;
  /** Sign out at the provider (may navigate away); the local session is dropped before. */
  signOut(): Promise<void>;
  /** Forget the provider's tokens in this tab without asking the provider (the session ended). */
  forget(): void;
}

let current: Session | null = load();
let refreshing: Promise<Session> | null = null;
let external: ExternalIdentity | null = null;
const listeners = new Set<(s: Session | null) => void>();

/** Route renewal and sign-out through an external provider (null: back to the built-in identity). */
export function setExternalIdentity(identity: ExternalIdentity | null): void {
  external = identity;
}

export function decodeClaims(token: string): Claims {
  const part = token.split(".")[1];
  if (!part) throw new Error("access token is not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  const raw = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0)))) as Record<
    string,
    unknown
  >;
  const realm = (raw.realm_access as { roles?: string[] } | undefined)?.roles ?? [];
  const roles = [...new Set([...(Array.isArray(raw.roles) ? (raw.roles as string[]) : []), ...realm])];
  return {
    sub: String(raw.sub ?? ""),
    email: typeof raw.email === "string" ? raw.email : undefined,
    tenant_id: typeof raw.tenant_id === "string" ? raw.tenant_id : undefined,
    roles,
    exp: Number(raw.exp ?? 0),
  };
}

function fromPair(pair: TokenPair, now = Date.now()): Session {
  return {
    accessToken: pair.access_token,
    refreshToken: pair.refresh_token,
    expiresAt: now + pair.expires_in * 1000,
    claims: decodeClaims(pair.access_token),
  };
}

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function save(session: Session | null): void {
  current = session;
  try {
    if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage unavailable (private mode): the session lives in memory only */
  }
  for (const listener of listeners) listener(session);
}

/** Adopt a session signed in elsewhere (the external provider's callback or renewal). */
export function setSession(session: Session | null): void {
  save(session);
}

export function getSession(): Session | null {
  return current;
}

export function onSessionChange(listener: (s: Session | null) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function isOperator(claims: Claims | undefined): boolean {
  return !!claims && claims.roles.some((r) => OPERATOR_ROLES.includes(r));
}

export function isTenantUser(claims: Claims | undefined): boolean {
  return !!claims && !!claims.tenant_id && claims.roles.some((r) => TENANT_ROLES.includes(r));
}

export function isTenantAdmin(claims: Claims | undefined): boolean {
  return !!claims && claims.roles.includes("tenant-admin");
}

/** The error body every Pulse endpoint answers with. */
export interface ErrorBody {
  error?: { code?: string; message?: string; details?: Record<string, unknown> };
}

export class AuthError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

async function post(path: string, body: unknown): Promise<Response> {
  try {
    return await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    });
  } catch {
    throw new AuthError("Pulse cannot be reached. Check your connection and try again.", 0, "network");
  }
}

async function postJson(path: string, body: unknown): Promise<TokenPair> {
  const response = await post(path, body);
  if (!response.ok) {
    const parsed = (await response.json().catch(() => ({}))) as ErrorBody;
    const retry = response.headers.get("retry-after");
    let message = parsed.error?.message ?? `sign-in failed (${response.status})`;
    if (response.status === 429 && retry) message = `Too many attempts. Try again in ${retry} s.`;
    throw new AuthError(message, response.status, parsed.error?.code ?? "error");
  }
  return (await response.json()) as TokenPair;
}

export async function login(email: string, password: string): Promise<Session> {
  const session = fromPair(await postJson("/auth/login", { email, password }));
  save(session);
  return session;
}

/** A fresh access token; concurrent callers share one refresh (a refresh token works only once). */
export function refresh(): Promise<Session> {
  if (refreshing) return refreshing;
  const session = current;
  if (!session) return Promise.reject(new AuthError("not signed in", 401, "unauthorized"));
  const renewal = external
    ? external.renew()
    : postJson("/auth/refresh", { refresh_token: session.refreshToken }).then((pair) => fromPair(pair));
  refreshing = renewal
    .then((next) => {
      save(next);
      return next;
    })
    .catch((err: unknown) => {
      if (err instanceof AuthError && err.status !== 0 && err.status !== 429) dropSession();
      throw err;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** The access token to send now, refreshed first when it expires within 30 s. */
export async function accessToken(): Promise<string | null> {
  const session = current;
  if (!session) return null;
  if (session.expiresAt - Date.now() < 30_000) return (await refresh()).accessToken;
  return session.accessToken;
}

/** Forget the session in this tab without telling anyone (it has already ended: refused or spent tokens). */
export function dropSession(): void {
  external?.forget();
  save(null);
}

/**
 * Sign out: the built-in identity revokes the refresh token (POST /auth/logout) before the tokens are dropped, so a
 * copy of it is useless afterwards; with an external provider, its sign-out runs (revocation, end of its session).
 * The local session ends even when Pulse or the provider cannot be reached.
 */
export async function logout(): Promise<void> {
  const session = current;
  if (external) {
    const identity = external;
    save(null);
    await identity.signOut();
    return;
  }
  if (session?.refreshToken) {
    await post("/auth/logout", { refresh_token: session.refreshToken }).catch(() => undefined);
  }
  save(null);
}
