// End-to-end walk through the Pulse web app in Debian's chromium (playwright-core), against a running `pulse web`.
//
// Configuration (environment):
//   PULSE_E2E_BASE             http://127.0.0.1:PORT of pulse web
//   PULSE_E2E_EMAIL/_PASSWORD  a tenant-admin login
//   PULSE_E2E_OPERATOR_EMAIL/_PASSWORD  an operator login
//   PULSE_E2E_DEVICE           the device id to register
//   PULSE_E2E_ARTIFACTS        directory for screenshots (created)
//   PULSE_E2E_CHROMIUM         browser binary (default /usr/bin/chromium)
//
// Telemetry goes over real MQTT, sent by the caller: this script prints `PUBLISH {json}` on stdout and waits for a
// line `OK` (or `ERR …`) on stdin. Progress lines start with `STEP`; the last line is `RESULT {json}`.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env("PULSE_E2E_BASE");
const EMAIL = env("PULSE_E2E_EMAIL");
const PASSWORD = env("PULSE_E2E_PASSWORD");
const OP_EMAIL = env("PULSE_E2E_OPERATOR_EMAIL");
const OP_PASSWORD = env("PULSE_E2E_OPERATOR_PASSWORD");
const DEVICE = env("PULSE_E2E_DEVICE", "e2e-fridge");
const ARTIFACTS = env("PULSE_E2E_ARTIFACTS", "e2e-artifacts");
const CHROMIUM = env("PULSE_E2E_CHROMIUM", "/usr/bin/chromium");
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const TIMEOUT = 30_000;

mkdirSync(ARTIFACTS, { recursive: true });
const lines = createInterface({ input: process.stdin });
const replies = [];
const waiters = [];
lines.on("line", (line) => {
  const w = waiters.shift();
  if (w) w(line);
  else replies.push(line);
});
const nextReply = () =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no answer to PUBLISH on stdin within 30 s")), TIMEOUT);
    const take = (line) => {
      clearTimeout(t);
      resolve(line);
    };
    if (replies.length) take(replies.shift());
    else waiters.push(take);
  });

const step = (name) => console.log(`STEP ${name}`);
async function publish(credentials, metrics, seq) {
  console.log(`PUBLISH ${JSON.stringify({ ...credentials, metrics, seq })}`);
  const answer = await nextReply();
  if (answer.trim() !== "OK") throw new Error(`publishing failed: ${answer}`);
}

const consoleErrors = [];
const pageErrors = [];
const shots = [];
async function shot(page, name) {
  const path = join(ARTIFACTS, `${String(shots.length + 1).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path, fullPage: false });
  shots.push(path);
}

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(`${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => pageErrors.push(`${page.url()}: ${err.message}`));
}

async function signIn(page, email, password) {
  await page.goto(`${BASE}/app/`);
  await page.waitForURL(/\/app\/login/);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** First-contentful-paint of the fleet overview on a full load with a signed-in session, and when its data showed. */
async function measurePaint(page, runs = 5) {
  const results = [];
  for (let i = 0; i < runs; i++) {
    await page.goto(`${BASE}/app/`, { waitUntil: "load" });
    await page.locator('[data-kpi="Devices"]').waitFor({ timeout: TIMEOUT });
    const r = await page.evaluate(() => {
      const fcp = performance.getEntriesByName("first-contentful-paint")[0];
      const data = performance.getEntriesByName("pulse:overview-data")[0];
      const assets = performance.getEntriesByType("resource").filter((e) => /\.(js|css)$/.test(new URL(e.name).pathname));
      return {
        fcp_ms: fcp ? fcp.startTime : null,
        kpis_ms: data ? data.startTime : null,
        asset_kib: Math.round(assets.reduce((n, e) => n + e.decodedBodySize, 0) / 1024),
      };
    });
    results.push(r);
  }
  const median = (xs) => {
    const s = xs.filter((x) => x !== null).sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)] : null;
  };
  return {
    runs: results,
    fcp_median_ms: median(results.map((r) => r.fcp_ms)),
    kpis_median_ms: median(results.map((r) => r.kpis_ms)),
    asset_kib: results[0]?.asset_kib ?? null,
  };
}

const result = {};
const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true, timeout: 60_000 });
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  watch(page);

  step("log in as tenant admin");
  await signIn(page, EMAIL, PASSWORD);
  await page.locator('[data-page="overview"]').waitFor();
  await page.locator('[data-kpi="Devices"]').waitFor();
  await shot(page, "overview");

  step("theme toggles between dark and light");
  const wasDark = await page.evaluate(() => document.documentElement.classList.contains("dark"));
  await page.getByRole("button", { name: /Switch to (light|dark) theme/ }).click();
  const nowDark = await page.evaluate(() => document.documentElement.classList.contains("dark"));
  if (nowDark === wasDark) throw new Error("the theme did not change");
  await shot(page, `overview-${nowDark ? "dark" : "light"}`);
  await page.getByRole("button", { name: /Switch to (light|dark) theme/ }).click();

  step("measure first paint of the fleet overview");
  result.paint = await measurePaint(page);
  console.log(`PAINT ${JSON.stringify(result.paint)}`);

  step("register a device");
  await page.goto(`${BASE}/app/devices`);
  await page.locator('[data-page="devices"]').waitFor();
  await page.getByRole("button", { name: "Register device" }).click();
  await page.getByLabel("Device id").fill(DEVICE);
  await page.getByLabel("Name").fill("E2E fridge");
  await page.getByRole("button", { name: "Register", exact: true }).click();
  await page.locator(`[data-credentials="${DEVICE}"]`).waitFor();
  const credentials = {
    username: (await page.getByTestId("mqtt-username").textContent()).trim(),
    password: (await page.getByTestId("mqtt-password").textContent()).trim(),
    client_id: (await page.getByTestId("mqtt-client-id").textContent()).trim(),
    topic_prefix: (await page.getByTestId("mqtt-topic-prefix").textContent()).trim(),
    provision_token: (await page.getByTestId("provision-token").textContent()).trim(),
  };
  if (!credentials.provision_token.startsWith("pt_")) throw new Error("no provision token shown");
  await shot(page, "device-registered");
  await page.getByRole("link", { name: "Open device" }).click();
  await page.locator(`[data-page="device"][data-device="${DEVICE}"]`).waitFor();
  await page.getByText("No numeric telemetry yet").waitFor();

  step("telemetry over MQTT appears live on the device page");
  await publish(credentials, { temp_c: 21.5, door_open: false }, 1);
  const last = page.getByTestId("metric-last-temp_c");
  await last.waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="metric-last-temp_c"]')?.textContent === "21.5", null, { timeout: TIMEOUT });
  const chart = page.locator('[data-metric="temp_c"] [data-chart="uplot"]');
  await chart.waitFor();
  const pointsBefore = Number(await chart.getAttribute("data-points"));
  await publish(credentials, { temp_c: 24.0 }, 2);
  await page.waitForFunction(
    (before) => {
      const el = document.querySelector('[data-metric="temp_c"] [data-chart="uplot"]');
      return !!el && Number(el.getAttribute("data-points")) > before && el.getAttribute("data-last") === "24";
    },
    pointsBefore,
    { timeout: TIMEOUT },
  );
  result.chart_points = { before: pointsBefore, after: Number(await chart.getAttribute("data-points")) };
  await shot(page, "device-live-chart");

  step("create a threshold rule");
  await page.goto(`${BASE}/app/rules/new`);
  await page.getByLabel("Name").fill("E2E fridge too warm");
  await page.getByLabel("Severity").selectOption("4");
  await page.getByLabel("Metric").fill("temp_c");
  await page.getByLabel("Operator").selectOption("GT");
  await page.getByLabel("Value", { exact: true }).fill("30");
  await page.getByLabel("Clear value (hysteresis)").fill("28");
  await page.getByRole("button", { name: "Create rule" }).click();
  await page.waitForURL(/\/app\/rules\/[0-9a-f-]{36}$/);
  await page.getByRole("button", { name: "Save rule" }).waitFor();
  await shot(page, "rule");

  step("an alert appears live in the inbox");
  await page.goto(`${BASE}/app/alerts`);
  await page.locator('[data-page="alerts"]').waitFor();
  await page.getByText("No alerts here").waitFor();
  await publish(credentials, { temp_c: 31.5 }, 3);
  const alertRow = page.locator("li[data-alert-id]").first();
  await alertRow.waitFor({ timeout: 45_000 });
  result.alert_title = await alertRow.getAttribute("data-alert-title");
  await shot(page, "alert-inbox");

  step("acknowledge the alert");
  await alertRow.locator("a").click();
  const panel = page.locator('[data-alert-panel][data-status="OPEN"]');
  await panel.waitFor();
  await panel.getByRole("button", { name: "Acknowledge" }).click();
  await page.locator('[data-alert-panel][data-status="ACKNOWLEDGED"]').waitFor();
  await page.locator('[data-testid="alert-timeline"] [data-event-kind="ACKNOWLEDGED"]').waitFor();
  await shot(page, "alert-acknowledged");

  step("the on-call timeline renders");
  await page.goto(`${BASE}/app/oncall`);
  await page.getByTestId("on-call-now").first().waitFor();
  await page.locator("[data-schedule] a").first().click();
  await page.getByTestId("schedule-timeline").waitFor();
  const shifts = await page.locator('[data-testid="timeline-final"] [data-shift-user]').count();
  if (shifts === 0) throw new Error("the final schedule row shows no shift");
  result.timeline_shifts = shifts;
  await shot(page, "oncall-timeline");

  step("sign out");
  await page.getByRole("button", { name: "Account" }).click();
  await page.getByRole("menuitem", { name: "Sign out" }).click();
  await page.waitForURL(/\/app\/login/);

  step("operator: the NOC renders every widget with data");
  await signIn(page, OP_EMAIL, OP_PASSWORD);
  await page.locator('[data-page="noc"]').waitFor();
  const widgets = ["gauge-online", "gauge-ingest", "gauge-alerts", "gauge-db", "area-msgs", "area-alerts", "area-online", "area-queue", "topology", "heatmap", "feed"];
  for (const w of widgets) {
    await page.locator(`[data-widget="${w}"][data-has-data="true"]`).waitFor({ timeout: 45_000 });
  }
  for (const w of widgets.filter((w) => !["topology", "feed"].includes(w))) {
    await page.locator(`[data-widget="${w}"] canvas`).first().waitFor();
  }
  result.noc_widgets = widgets.length;
  await shot(page, "noc");

  step("operator: the NOC's event feed is live over the WebSocket");
  const feed = page.locator('[data-widget="feed"]');
  await feed.getByRole("heading", { name: "Live events · live" }).waitFor({ timeout: TIMEOUT });
  await publish(credentials, { temp_c: 20.0 }, 4); // below the clear value: the evaluator closes the alert
  await feed.getByText(`${result.alert_title} closed`).first().waitFor({ timeout: 45_000 });
  result.noc_live_feed = true;

  step("TV mode toggles with F");
  await page.locator("body").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("f");
  await page.getByTestId("tv-badge").waitFor();
  if (await page.locator("aside").first().isVisible()) throw new Error("navigation still shows in TV mode");
  if (await page.locator("header").first().isVisible()) throw new Error("the top bar still shows in TV mode");
  await shot(page, "noc-tv-mode");
  await page.keyboard.press("f");
  await page.getByTestId("tv-badge").waitFor({ state: "detached" });
  await page.locator("aside").first().waitFor({ state: "visible" });

  step("operator: tenant health matrix");
  await page.goto(`${BASE}/app/operator/tenants`);
  await page.getByTestId("tenant-matrix").waitFor();
  await shot(page, "tenants");

  const unexpected = consoleErrors.filter((e) => !/status of 404/.test(e));
  result.console_errors = consoleErrors;
  result.screenshots = shots;
  if (pageErrors.length) throw new Error(`uncaught errors in the page:\n${pageErrors.join("\n")}`);
  if (unexpected.length) throw new Error(`console errors:\n${unexpected.join("\n")}`);
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (err) {
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: join(ARTIFACTS, "failure.png") });
  } catch {
    /* the failure itself is reported below */
  }
  console.error(`FAILED ${err?.stack ?? err}`);
  if (pageErrors.length) console.error(`page errors:\n${pageErrors.join("\n")}`);
  if (consoleErrors.length) console.error(`console errors:\n${consoleErrors.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  lines.close();
}
