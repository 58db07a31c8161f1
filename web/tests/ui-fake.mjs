// Runs the built page (dist/) in real headless Chromium with the node's CSP,
// against the in-memory fake cluster (tests/fake.ts) instead of WebTransport:
// checks the UI flow and takes screenshots (no Courier node needed).
//   npm run build && node tests/ui-fake.mjs [outdir]   (default .test-out/ui-fake; outputs stay out of dist/, which the node embeds)
import { chromium } from "playwright-core";
import { build } from "esbuild";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2] || ".test-out/ui-fake";
mkdirSync(out, { recursive: true });
await build({ entryPoints: ["tests/fake-browser.ts"], bundle: true, format: "iife", outfile: ".test-out/fake-browser.js", logLevel: "warning" });
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self' https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const types = { html: "text/html", js: "text/javascript", css: "text/css" };
const webJson = { version: 1, node_id: 2, nodes: [1, 2, 3].map((id) => ({ id, name: `n${id}`, url: `https://127.0.0.1:71${id}1/courier`, cert_sha256: ["ab".repeat(32)] })) };

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
let fail = 0;
const check = (n, ok) => { console.log(`${ok ? "ok  " : "FAIL"} ${n}`); if (!ok) fail++; };
async function run(width, height, tag) {
  const ctx = await browser.newContext({ viewport: { width, height } });
  const page = await ctx.newPage();
  page.on("console", (m) => console.log(`console ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => console.log(`pageerror: ${e.message}`));
  await page.addInitScript({ content: readFileSync(".test-out/fake-browser.js", "utf8") });
  await page.route("https://app.test/**", (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/web.json") return route.fulfill({ contentType: "application/json", body: JSON.stringify(webJson) });
    const file = path === "/" ? "index.html" : path.slice(1);
    try {
      const body = readFileSync(join("dist", file));
      return route.fulfill({ body, headers: { "content-type": types[file.split(".").pop()] ?? "application/octet-stream", "content-security-policy": CSP } });
    } catch { return route.fulfill({ status: 404, body: "" }); }
  });
  await page.goto("https://app.test/");
  const T = { timeout: 10000 };
  await page.waitForSelector("#phone", { state: "visible", ...T });
  await page.screenshot({ path: join(out, `${tag}-0-login.png`) });
  await page.fill("#phone", "+9996610001"); await page.click("#send-code");
  await page.fill("#code", "11111"); await page.click("#sign-in");
  await page.fill("#first-name", "Alice"); await page.fill("#last-name", "Web"); await page.click("#sign-up");
  await page.waitForFunction(() => document.getElementById("status").textContent === "online", null, T);
  await page.evaluate(() => { const c = window.fakeCluster; c.hideChat = false; c.post(2n, "Hi Alice! <b>not bold</b> — this is Bob."); });
  await page.waitForSelector('.dialog[data-chat-id="500"] .unread:text-is("1")', T);
  await page.screenshot({ path: join(out, `${tag}-1-dialogs.png`) });
  await page.click('.dialog[data-chat-id="500"]');
  await page.waitForSelector("#messages .message", T);
  await page.fill("#composer", "Hello Bob, this is a longer message to see how a bubble wraps when the text goes on for a while."); await page.press("#composer", "Enter");
  await page.waitForSelector("#messages .message.own", T);
  await page.evaluate(() => { const c = window.fakeCluster; c.post(2n, "line one\nline two"); c.typing(2n); });
  await page.waitForFunction(() => document.getElementById("typing").textContent.includes("typing"), null, T);
  await page.screenshot({ path: join(out, `${tag}-2-chat.png`) });
  await page.evaluate(() => window.fakeCluster.kill(2));
  await page.waitForFunction(() => document.getElementById("status").textContent === "reconnecting…", null, T);
  await page.screenshot({ path: join(out, `${tag}-3-reconnecting.png`) });
  await page.evaluate(() => { const c = window.fakeCluster; c.post(2n, "k1"); c.post(2n, "k2"); c.post(2n, "k3"); });
  await page.waitForFunction(() => document.getElementById("status").textContent === "online" && document.getElementById("status").dataset.nodeId === "3", null, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelectorAll("#messages .message").length === 6, null, T);
  const texts = await page.$$eval("#messages .message .text", (els) => els.map((e) => e.textContent));
  check(`${tag}: after failover ${JSON.stringify(texts)}`, JSON.stringify(texts.slice(3)) === '["k1","k2","k3"]');
  check(`${tag}: no injected HTML`, (await page.$$("#messages b")).length === 0);
  await page.screenshot({ path: join(out, `${tag}-4-after-failover.png`) });
  await ctx.close();
}
try {
  await run(1280, 800, "wide");
  await run(400, 760, "narrow");
} catch (e) {
  console.log(`FAIL ${e.message}`); fail++;
}
await browser.close();
console.log(fail ? `${fail} failed` : "ui-fake passed");
process.exit(fail ? 1 : 0);
