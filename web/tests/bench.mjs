// Courier Web benchmark (not a test: docs/benchmarks.md, "Courier Web").
// Against a running cluster (`./scripts/dev`), in headless Chromium:
//  * a cold page load of a logged-in user: HTTP bytes transferred (the page,
//    its script and style, /web.json) and the time from navigation to the
//    dialog list shown;
//  * send-to-display latency: a page on node 1 sends N messages one at a
//    time to a page on node 2, each timed from the click on Send to its
//    bubble in the other page (both pages read the same clock).
// Env: COURIER_WEB_URLS (default the dev cluster's nodes 1 and 2),
//      BENCH_MESSAGES (default 200), CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line.
import { chromium } from "playwright-core";

const urls = (process.env.COURIER_WEB_URLS ?? "http://127.0.0.1:7113/,http://127.0.0.1:7123/").split(",");
const n = Number(process.env.BENCH_MESSAGES ?? 200);
const WAIT = 20_000;
const run = Date.now() % 100000;
const phone = (x) => `+99966${x}${String(run).padStart(4, "0").slice(-4)}`;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });

async function login(url, x, first) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(url);
  await page.fill("#phone", phone(x));
  await page.click("#send-code");
  await page.waitForSelector("#code", { state: "visible", timeout: WAIT });
  await page.fill("#code", String(x).repeat(5));
  await page.click("#sign-in");
  await page.waitForFunction(() => {
    const f = document.getElementById("first-name");
    return (f && f.offsetParent !== null) || document.getElementById("status")?.textContent === "online";
  }, null, { timeout: WAIT });
  if (await page.isVisible("#first-name")) {
    await page.fill("#first-name", first);
    await page.fill("#last-name", "Bench");
    await page.click("#sign-up");
  }
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "online", null, { timeout: WAIT });
  return { ctx, page };
}

const a = await login(urls[0], 3, "Ann");
const b = await login(urls[1], 4, "Ben");
await a.page.fill("#new-chat-phone", phone(4));
await a.page.click("#new-chat");
await a.page.waitForFunction(() => document.getElementById("chat-title")?.textContent === "Ben Bench", null, { timeout: WAIT });
await a.page.fill("#composer", "hello");
await a.page.click("#send");
await b.page.waitForSelector('#dialogs .dialog:has(.title:text-is("Ann Bench"))', { timeout: WAIT });
await b.page.click('#dialogs .dialog:has(.title:text-is("Ann Bench"))');
await b.page.waitForSelector('#messages .message .text:text-is("hello")', { timeout: WAIT });

// Every bubble's arrival time in Ben's page, by its text.
await b.page.evaluate(() => {
  window.__arrivals = {};
  new MutationObserver(() => {
    for (const t of document.querySelectorAll("#messages .message .text")) {
      if (!(t.textContent in window.__arrivals)) window.__arrivals[t.textContent] = performance.timeOrigin + performance.now();
    }
  }).observe(document.getElementById("messages"), { childList: true, subtree: true, characterData: true });
});
const lat = [];
for (let i = 0; i < n; i++) {
  const text = `bench ${run} ${i}`;
  const sent = await a.page.evaluate((text) => {
    const c = document.getElementById("composer");
    c.value = text;
    c.dispatchEvent(new Event("input"));
    const t = performance.timeOrigin + performance.now();
    document.getElementById("send").click();
    return t;
  }, text);
  const shown = await b.page.waitForFunction((text) => window.__arrivals[text], text, { timeout: WAIT, polling: "raf" });
  lat.push((await shown.jsonValue()) - sent);
}
lat.sort((x, y) => x - y);
const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];

// A cold load: a new context (empty cache) holding Ann's stored session.
const state = await a.ctx.storageState();
const cold = await browser.newContext({ storageState: state });
const page = await cold.newPage();
let bytes = 0;
page.on("requestfinished", async (req) => {
  const s = await req.sizes().catch(() => null);
  if (s) bytes += s.responseBodySize + s.responseHeadersSize;
});
const t0 = Date.now();
await page.goto(urls[0]);
await page.waitForSelector('#dialogs .dialog:has(.title:text-is("Ben Bench"))', { timeout: WAIT });
const toDialogs = Date.now() - t0;
await page.waitForTimeout(300); // the last `requestfinished` sizes

console.log(JSON.stringify({
  cold_load: { http_bytes: bytes, ms_to_dialog_list: toDialogs },
  send_to_display_ms: { n: lat.length, p50: +pct(50).toFixed(1), p99: +pct(99).toFixed(1), max: +lat[lat.length - 1].toFixed(1) },
}));
await browser.close();
