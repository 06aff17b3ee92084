// Browser test of the interactive docs: headless Chromium opens `${TODO_BASE_URL}/docs`, waits for
// every operation, authorizes with a bearer token, then runs "Try it out" on createTask and
// listTasks and reads the responses Swagger UI shows. Fails if the page contacts any host but
// the server (Swagger UI's assets must be served by the API, not a CDN).
//
//   TODO_BASE_URL=http://127.0.0.1:8080 TODO_JWT_SECRET=… npx tsx src/swagger-ui.test.ts
//
// Needs Chromium at /usr/bin/chromium (Debian: `apt-get install chromium`), or at CHROMIUM_PATH.
// Without it the test fails; `--if-available` (used by `npm test`) skips instead.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Locator, type Page } from "playwright-core";
import { Checks, config, mintToken, uniqueUserId } from "./support";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
// `cargo xtask e2e` points this into target/ so runs do not rewrite the committed screenshot.
const SUCCESS_SHOT = process.env.TODO_SWAGGER_SCREENSHOT || "swagger-ui.png";
const FAILURE_SHOT = "swagger-ui-failure.png";

if (!existsSync(CHROMIUM)) {
  if (process.argv.includes("--if-available")) {
    console.log(`Swagger UI browser test skipped: no Chromium at ${CHROMIUM}`);
    process.exit(0);
  }
  console.error(
    `error: the Swagger UI test needs Chromium at ${CHROMIUM}, which does not exist.\n` +
      "Install it (Debian/Ubuntu: apt-get update && apt-get install -y chromium) or set CHROMIUM_PATH.",
  );
  process.exit(1);
}

const { baseUrl, secret } = config();
// Every operation the spec names must be rendered: read them from the server's own spec, so a
// new operation is checked without editing a list here.
const spec = (await (await fetch(`${baseUrl}/openapi.json`)).json()) as {
  paths: Record<string, Record<string, { operationId?: string }>>;
};
const OPERATIONS = Object.values(spec.paths).flatMap((ops) =>
  Object.values(ops).flatMap((op) => (op.operationId ? [op.operationId] : [])),
);
assert.ok(OPERATIONS.includes("createTask") && OPERATIONS.includes("listTasks"), "the spec names its operations");
const server = new URL(baseUrl);
const user = uniqueUserId("swagger-");
const token = mintToken(secret, user);
const title = `Made in Swagger UI ${user}`;
const t = new Checks();

const userDataDir = mkdtempSync(join(tmpdir(), "todo-swagger-ui-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
context.setDefaultTimeout(30_000);
const page = context.pages()[0] ?? (await context.newPage());

// Every request the page makes, to prove nothing is fetched from anywhere but the server.
const foreign: string[] = [];
let ownRequests = 0;
const pageErrors: string[] = [];
context.on("request", (request) => {
  const url = new URL(request.url());
  if (url.protocol === "data:" || url.protocol === "blob:" || url.protocol === "about:") return;
  if (url.host === server.host) ownRequests++;
  else foreign.push(`${request.method()} ${request.url()}`);
});
page.on("pageerror", (err) => pageErrors.push(err.message));

/** The block of one operation; Swagger UI gives it the id `operations-<tag>-<operationId>`. */
const operation = (page: Page, operationId: string) => page.locator(`.opblock[id$="-${operationId}"]`);

/** Expands an operation and presses "Try it out"; returns its block. */
async function openTryItOut(page: Page, operationId: string) {
  const block = operation(page, operationId);
  await block.locator(".opblock-summary").first().click();
  await block.locator("button.try-out__btn").click();
  await block.locator('tr[data-param-name="user_id"] input').waitFor();
  return block;
}

/** The parameters Swagger UI pre-filled (from the spec's examples), as `name=value`. */
async function prefilledParameters(block: Locator): Promise<string[]> {
  return block.locator("tr[data-param-name]").evaluateAll((rows) =>
    rows.flatMap((row) => {
      const values = [...row.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")]
        .map((input) => input.value)
        .filter((value) => value !== "" && value !== "--");
      return values.length > 0 ? [`${row.getAttribute("data-param-name")}=${values.join(",")}`] : [];
    }),
  );
}

/** Fills user_id (and optionally the body), executes, and returns what the UI shows. */
async function execute(block: Locator, body?: string) {
  await block.locator('tr[data-param-name="user_id"] input').fill(user);
  if (body !== undefined) await block.locator("textarea.body-param__text").fill(body);
  await block.locator("button.execute").click();
  const response = block.locator(".live-responses-table .response").first();
  await response.waitFor();
  return {
    url: (await block.locator(".request-url").innerText()).trim(),
    status: (await response.locator(".response-col_status").innerText()).trim(),
    body: await response.locator(".response-col_description").innerText(),
  };
}

/** A step the later ones build on: if it fails, the run stops there instead of timing out. */
class StopRun extends Error {}
async function step(name: string, fn: () => unknown) {
  const failedBefore = t.failed;
  await t.check(name, fn);
  if (t.failed > failedBefore) throw new StopRun(`stopped: later steps need "${name}"`);
}

let ok = false;
try {
  console.log(`Swagger UI at ${baseUrl}/docs (user ${user}, Chromium ${context.browser()?.version() ?? ""})`);

  await step(`the page loads and renders all ${OPERATIONS.length} operations`, async () => {
    const response = await page.goto(`${baseUrl}/docs`);
    assert.equal(response?.status(), 200);
    for (const id of OPERATIONS) await operation(page, id).waitFor();
    assert.equal(await page.locator(".opblock").count(), OPERATIONS.length);
  });

  await step("Authorize accepts a bearer token", async () => {
    await page.locator(".auth-wrapper button.authorize").click();
    const modal = page.locator(".modal-ux");
    await modal.locator("input").first().fill(token);
    await modal.locator('.auth-btn-wrapper button[type="submit"], .auth-btn-wrapper button.authorize').first().click();
    await modal.locator("button.btn-done, .auth-btn-wrapper button:has-text('Logout')").first().waitFor();
    await modal.locator(".close-modal").click();
    await page.locator(".auth-wrapper button.authorize.locked").waitFor();
  });

  const create = await openTryItOut(page, "createTask");
  let created = 0;

  await t.check("Try it out: createTask's pre-filled example body is accepted (201)", async () => {
    const result = await execute(create);
    if (result.status === "201") created++;
    assert.equal(result.status, "201", `the spec's example body: ${result.body.slice(0, 400)}`);
  });

  await step("Try it out: createTask with an edited body answers 201 with the task", async () => {
    const body = JSON.stringify({ title, priority: "high", tags: ["Swagger"] }, null, 2);
    const result = await execute(create, body);
    if (result.status === "201") created++;
    assert.equal(result.status, "201", result.body);
    assert.ok(result.body.includes(title), `response shows the title: ${result.body.slice(0, 500)}`);
    assert.ok(result.body.includes('"swagger"'), "tags normalised");
  });

  const list = await openTryItOut(page, "listTasks");

  await t.check("Try it out: listTasks pre-fills no filter (only the path's user_id)", async () => {
    // Swagger UI copies a parameter's `example` into its input: an example on an optional
    // filter silently narrows what "Execute" returns.
    const filters = (await prefilledParameters(list)).filter((p) => !p.startsWith("user_id="));
    assert.deepEqual(filters, [], "optional query parameters should carry no example");
  });

  await step("Try it out: listTasks answers 200 listing it", async () => {
    for (const input of await list.locator('tr[data-param-name]:not([data-param-name="user_id"]) input[type="text"]').all()) {
      await input.fill(""); // clear any pre-filled filter (see the check above)
    }
    const result = await execute(list);
    assert.equal(result.status, "200", result.body);
    assert.ok(result.body.includes(title), `GET ${result.url} should list the task: ${result.body.slice(0, 500)}`);
    assert.ok(new RegExp(`"total":\\s*${created}\\b`).test(result.body), `meta.total is ${created} for this fresh user`);
  });

  await t.check("no request left the server (no CDN)", () => {
    assert.ok(ownRequests >= 3, "the recorder saw the page, createTask and listTasks requests");
    assert.deepEqual(foreign, [], "requests to other hosts");
  });

  await t.check("no JavaScript errors on the page", () => {
    assert.deepEqual(pageErrors, []);
  });

  ok = t.failed === 0;
  if (ok) {
    // The viewport around listTasks' live response (request URL, status, body); the curl
    // command is masked as it shows the bearer token.
    await list.locator(".request-url").evaluate((el) => {
      el.scrollIntoView({ block: "start" });
      window.scrollBy(0, -40);
    });
    await page.screenshot({ path: SUCCESS_SHOT, mask: [page.locator(".curl-command")], maskColor: "#999" });
    console.log(`  screenshot: ${SUCCESS_SHOT} (${Math.round(statSync(SUCCESS_SHOT).size / 1024)} KiB)`);
  }
} catch (err) {
  if (!(err instanceof StopRun)) t.failed++; // a StopRun's failure is already counted
  console.error(`  ${err instanceof Error ? err.message : String(err)}`);
} finally {
  if (!ok) {
    await page.screenshot({ path: FAILURE_SHOT, fullPage: true }).then(
      () => console.log(`  failure screenshot: ${FAILURE_SHOT}`),
      () => {},
    );
  }
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
t.finish();
