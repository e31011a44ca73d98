// A real OpenID Connect provider (panva's certified oidc-provider) standing in for Keycloak in tests: the web app's
// public client signs in with authorization code + PKCE, and access tokens are JWTs for Pulse's audience carrying
// `tenant_id` and `roles`, as deploy/keycloak/pulse-realm.json makes Keycloak issue them.
//
// Configuration (environment):
//   OIDC_PORT           loopback port to listen on (0 = any free one)
//   OIDC_CLIENT_ID      the web app's client id (default pulse-web)
//   OIDC_WEB_ORIGIN     origin of the web app, e.g. http://127.0.0.1:8080: redirect URIs are ORIGIN/app/auth/callback,
//                       sign-out returns to ORIGIN/app/login
//   OIDC_AUDIENCE       aud of access tokens (default pulse)
//   OIDC_ACCESS_TTL_S   access token lifetime (default 300, Keycloak's realm setting)
//   OIDC_ACCOUNTS       JSON {"<login>": {"email", "name", "tenant_id", "roles": [...]}}: who may sign in
//
// Sign-in uses oidc-provider's development interactions (a login form; the login name picks the account, the
// password is not checked) and no consent screen, like Keycloak's first-party client. Prints `READY <issuer>` once
// it listens, `EVENT <name> <detail>` for token grants, revocations and sign-outs, and stops on SIGTERM or when stdin closes.
import { generateKeyPairSync } from "node:crypto";
import { createInterface } from "node:readline";
import Provider from "oidc-provider";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const PORT = Number(env("OIDC_PORT", "0"));
const CLIENT_ID = env("OIDC_CLIENT_ID", "pulse-web");
const WEB_ORIGIN = env("OIDC_WEB_ORIGIN").replace(/\/$/, "");
const AUDIENCE = env("OIDC_AUDIENCE", "pulse");
const ACCESS_TTL_S = Number(env("OIDC_ACCESS_TTL_S", "300"));
const ACCOUNTS = JSON.parse(env("OIDC_ACCOUNTS"));
// The resource the web app's tokens are for. Keycloak puts `pulse` into `aud` with an audience mapper; here the
// resource indicator's server info sets the same audience, and every grant of the client gets this resource.
const RESOURCE = "urn:pulse:api";

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "e2e-rs256", alg: "RS256", use: "sig" };

function account(accountId) {
  const found = Object.hasOwn(ACCOUNTS, accountId) ? ACCOUNTS[accountId] : undefined;
  if (!found) return undefined;
  return {
    accountId,
    async claims() {
      return { sub: accountId, email: found.email, email_verified: true, name: found.name ?? accountId };
    },
  };
}

async function listen(app, port) {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, "127.0.0.1", () => resolve(server));
    server.on("error", reject);
  });
}

// The issuer names the port, so the server listens first and the provider is mounted once the port is known.
const holder = { callback: null };
const { createServer } = await import("node:http");
const server = createServer((req, res) => {
  if (holder.callback) holder.callback(req, res);
  else {
    res.statusCode = 503;
    res.end();
  }
});
await listen(server, PORT);
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      token_endpoint_auth_method: "none",
      application_type: "web",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: [`${WEB_ORIGIN}/app/auth/callback`],
      post_logout_redirect_uris: [`${WEB_ORIGIN}/app/login`],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ["pulse-e2e-cookie-key-" + process.pid] },
  pkce: { required: () => true },
  scopes: ["openid", "profile", "email", "offline_access"],
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  findAccount: async (_ctx, sub) => account(sub),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource !== RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: "openid profile email",
          audience: AUDIENCE,
          accessTokenTTL: ACCESS_TTL_S,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  // Pulse reads the tenant and the roles from the access token, as from Keycloak's tenant_id mapper and roles scope.
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind !== "AccessToken") return undefined;
    const found = Object.hasOwn(ACCOUNTS, token.accountId) ? ACCOUNTS[token.accountId] : undefined;
    if (!found) return undefined;
    const claims = { email: found.email, roles: found.roles ?? [] };
    if (found.tenant_id) claims.tenant_id = found.tenant_id;
    return claims;
  },
  // The web app renews its access token with the refresh token (as with Keycloak's code flow).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  // A first-party client: no consent screen, every requested scope and the Pulse resource are granted.
  loadExistingGrant: async (ctx) => {
    const grantId =
      ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const grant = grantId
      ? await ctx.oidc.provider.Grant.find(grantId)
      : new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid profile email offline_access");
    grant.addResourceScope(RESOURCE, "openid profile email");
    await grant.save();
    return grant;
  },
  ttl: { AccessToken: ACCESS_TTL_S, IdToken: ACCESS_TTL_S, RefreshToken: 3600, Session: 3600, Grant: 3600 },
  renderError: async (ctx, out) => {
    ctx.type = "html";
    ctx.body = `<!DOCTYPE html><title>OIDC error</title><h1>${out.error}</h1><p>${out.error_description ?? ""}</p>`;
  },
});
provider.proxy = false;
for (const name of ["grant.success", "grant.error", "grant.revoked", "end_session.success"]) {
  provider.on(name, (ctx, err) => {
    const detail = err?.error_description ?? err?.message ?? ctx?.oidc?.params?.grant_type ?? "";
    console.log(`EVENT ${name} ${detail}`);
  });
}
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === "revocation") {
    console.log(`EVENT revocation ${ctx.status} ${ctx.oidc.params?.token_type_hint ?? ""}`);
  }
});
holder.callback = provider.callback();
console.log(`READY ${issuer}`);

const stop = () => {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
createInterface({ input: process.stdin }).on("close", stop);
