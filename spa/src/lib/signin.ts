// How this Pulse signs people in (GET /auth/config): the built-in email and password form, or an external OIDC
// provider (single sign-on), or neither (a provider is configured for the API but no client for the web app).
import type { OidcConfig } from "@/lib/oidc";

export type SignInConfig = { method: "password" } | { method: "oidc"; oidc: OidcConfig } | { method: "none" };

function isOidcConfig(value: unknown): value is OidcConfig {
  const v = value as Partial<OidcConfig> | null;
  return (
    !!v &&
    typeof v.issuer === "string" &&
    typeof v.client_id === "string" &&
    Array.isArray(v.scopes) &&
    v.scopes.every((s) => typeof s === "string")
  );
}

/** Reads /auth/config; a Pulse without that endpoint (404) signs in with the built-in form. */
export async function fetchSignInConfig(): Promise<SignInConfig> {
  let response: Response;
  try {
    response = await fetch("/auth/config", { headers: { accept: "application/json" }, credentials: "omit" });
  } catch {
    throw new Error("Pulse cannot be reached. Check your connection and try again.");
  }
  if (response.status === 404) return { method: "password" };
  if (!response.ok) throw new Error(`Pulse could not tell how to sign in (${response.status}).`);
  const body = (await response.json().catch(() => null)) as { method?: unknown; oidc?: unknown } | null;
  if (body?.method === "password" || body?.method === "none") return { method: body.method };
  if (body?.method === "oidc" && isOidcConfig(body.oidc)) return { method: "oidc", oidc: body.oidc };
  throw new Error("Pulse answered /auth/config with something this app does not understand.");
}
