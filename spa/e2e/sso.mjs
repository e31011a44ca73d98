// Single sign-on in Debian's chromium (playwright-core): the web app signs in at an OIDC provider (authorization
// code + PKCE), shows the tenant's devices, renews its access token with the provider's refresh token, and signs out
// at the provider. Run by tests/web/test_browser_sso.py against real `pulse web` and spa/e2e/oidc-provider.mjs.
//
// Configuration (environment):
//   PULSE_E2E_BASE        http://127.0.0.1:PORT of pulse web (set up with the provider)
//   PULSE_E2E_ISSUER      the provider's issuer URL
//   PULSE_E2E_CLIENT_ID   the web app's client id there
//   PULSE_E2E_LOGIN       the login name to type at the provider
//   PULSE_E2E_DEVICES     comma list of device ids the tenant has
//   PULSE_E2E_RENEW       "1": wait until the app renewed its access token, then load the devices again
//   PULSE_E2E_ARTIFACTS   directory for screenshots (created)
//   PULSE_E2E_CHROMIUM    browser binary (default /usr/bin/chromium)
//
// Progress lines start with `STEP`; the last line is `RESULT {json}`.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env("PULSE_E2E_BASE");
const ISSUER = env("PULSE_E2E_ISSUER");
const CLIENT_ID = env("PULSE_E2E_CLIENT_ID");
const LOGIN = env("PULSE_E2E_LOGIN");
const DEVICES = env("PULSE_E2E_DEVICES").split(",");
const RENEW = env("PULSE_E2E_RENEW", "1") === "1";
const ARTIFACTS = env("PULSE_E2E_ARTIFACTS", "e2e-artifacts");
const CHROMIUM = env("PULSE_E2E_CHROMIUM", "/usr/bin/chromium");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TIMEOUT = 30_000;

mkdirSync(ARTIFACTS, { recursive: true });
const step = (name) => console.log(`STEP ${name}`);
const shots = [];
async function shot(page, name) {
  const path = join(ARTIFACTS, `sso-${String(shots.length + 1).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path });
  shots.push(path);
}

/** The session the app keeps in this tab: Pulse's view and oidc-client-ts's user (with the refresh token). */
async function storedSession(page) {
  return page.evaluate((key) => {
    const pulse = JSON.parse(sessionStorage.getItem("pulse.session") ?? "null");
    const user = JSON.parse(sessionStorage.getItem(key) ?? "null");
    return { pulse, user };
  }, `oidc.user:${ISSUER}:${CLIENT_ID}`);
}

async function devicesShown(page) {
  await page.goto(`${BASE}/app/devices`);
  await page.locator('[data-page="devices"]').waitFor();
  for (const id of DEVICES) await page.locator(`[data-device-row="${id}"]`).waitFor();
  return page.locator("[data-device-row]").count();
}

const result = { screenshots: shots };
const pageErrors = [];
const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true, timeout: 60_000 });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(`${page.url()}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy/i.test(msg.text())) pageErrors.push(msg.text());
  });

  step("the app offers single sign-on instead of its own form");
  await page.goto(`${BASE}/app/devices`);
  await page.waitForURL(/\/app\/login/);
  const sso = page.getByRole("button", { name: "Sign in with SSO" });
  await sso.waitFor();
  result.password_form_shown = (await page.getByLabel("Password").count()) > 0;
  await shot(page, "login");

  step("sign in at the provider");
  await sso.click();
  await page.waitForURL((url) => url.href.startsWith(ISSUER));
  const authorize = new URL(page.url());
  result.provider_url = authorize.origin;
  await page.locator('input[name="login"]').fill(LOGIN);
  await page.locator('input[name="password"]').fill("any password: the development login does not check it");
  await shot(page, "provider-login");
  await page.locator('button[type="submit"]').click();

  step("back in the app, on the page asked for, with the tenant's devices");
  await page.waitForURL(`${BASE}/app/devices`);
  result.devices_shown = await devicesShown(page);
  const signedIn = await storedSession(page);
  result.claims = signedIn.pulse?.claims;
  result.has_refresh_token = typeof signedIn.user?.refresh_token === "string";
  result.account_label = (await page.getByRole("button", { name: "Account" }).textContent())?.trim();
  await shot(page, "devices");

  if (RENEW) {
    step("the access token is renewed with the refresh token before it expires");
    const before = signedIn.pulse.accessToken;
    await page.waitForFunction(
      (old) => {
        const s = JSON.parse(sessionStorage.getItem("pulse.session") ?? "null");
        return !!s && s.accessToken !== old;
      },
      before,
      { timeout: 90_000, polling: 500 },
    );
    const renewed = await storedSession(page);
    result.renewed = renewed.pulse.accessToken !== before;
    result.renewed_claims = renewed.pulse.claims;
    result.devices_after_renewal = await devicesShown(page);
  }
  const beforeLogout = await storedSession(page);

  step("sign out: the provider ends its session and sends the browser back to the sign-in page");
  await page.getByRole("button", { name: "Account" }).click();
  await page.getByRole("menuitem", { name: "Sign out" }).click();
  await page.waitForURL((url) => url.href.startsWith(ISSUER));
  await shot(page, "provider-logout");
  await page.getByRole("button", { name: "Yes, sign me out" }).click();
  await page.waitForURL(/\/app\/login/);
  await page.getByRole("button", { name: "Sign in with SSO" }).waitFor();
  await shot(page, "signed-out");
  const after = await storedSession(page);
  result.session_after_logout = after.pulse !== null || after.user !== null;

  step("the refresh token the app held no longer works at the provider");
  const metadata = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
  const refused = await fetch(metadata.token_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "refresh_token",
      client_id: CLIENT_ID,
      refresh_token: beforeLogout.user?.refresh_token ?? "",
    }),
  });
  result.old_refresh = { status: refused.status, error: (await refused.json()).error };

  step("the protected pages send the browser back to sign-in");
  await page.goto(`${BASE}/app/devices`);
  await page.waitForURL(/\/app\/login/);
  await page.getByRole("button", { name: "Sign in with SSO" }).waitFor();
} finally {
  await browser.close();
}
result.page_errors = pageErrors;
console.log(`RESULT ${JSON.stringify(result)}`);
