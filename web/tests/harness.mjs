// What the browser tests driven by cli/tests/web.rs share: the line protocol
// with the driver, bounded waits, sign-up, message queries and screenshots.
//
// Env:  COURIER_WEB_URLS   comma-separated page URLs of nodes 1..3
//       COURIER_ARTIFACTS  directory for screenshots (default: .)
//       CHROMIUM           browser binary (default /usr/bin/chromium)
// Protocol with the driver on stdout/stdin:
//       prints `STEP <name>` as it goes, `SCREENSHOT <path>`, `INFO …`;
//       prints `KILL <node_id>` and waits for a line `KILLED` on stdin;
//       prints `OK` (exit 0) or `FAIL <reason>` (exit 1).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const WAIT = 20_000; // every wait is bounded
export const urls = (process.env.COURIER_WEB_URLS ?? "").split(",").map((s) => s.trim()).filter(Boolean);
export const artifacts = process.env.COURIER_ARTIFACTS || ".";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

export const WIDE = { width: 1440, height: 900 };
export const NARROW = { width: 390, height: 844 }; // a phone

export function say(line) {
  process.stdout.write(line + "\n");
}
export function step(name) {
  say(`STEP ${name}`);
}

// ---- stdin lines (for KILLED)
const lines = [];
let lineWaiter = null;
const rl = createInterface({ input: process.stdin });
rl.on("line", (l) => {
  lines.push(l.trim());
  if (lineWaiter) lineWaiter();
});
export async function waitLine(expected, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = lines.indexOf(expected);
    if (i >= 0) {
      lines.splice(i, 1);
      return;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no "${expected}" on stdin within ${timeoutMs} ms`);
    await new Promise((r) => {
      lineWaiter = r;
      setTimeout(r, Math.min(left, 500));
    });
    lineWaiter = null;
  }
}

/** Asks the driver to kill -9 a node and waits until it did. */
export async function killNode(id) {
  say(`KILL ${id}`);
  await waitLine("KILLED", 60_000);
}

/** The test code of a dev number +99966XYYYY is XXXXX. */
export function testCode(phone) {
  return phone[6].repeat(5);
}

export async function waitFor(page, what, fn, arg, timeout = WAIT) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`timed out (${timeout} ms) waiting for ${what}`);
  }
}

export async function waitOnline(page, who, notNode = null, timeout = WAIT) {
  await waitFor(
    page,
    `${who} online${notNode !== null ? ` on a node other than ${notNode}` : ""}`,
    (notNode) => {
      const s = document.getElementById("status");
      return !!s && s.textContent === "online" && s.dataset.nodeId !== "" && s.dataset.nodeId !== String(notNode);
    },
    notNode,
    timeout,
  );
  return Number(await page.getAttribute("#status", "data-node-id"));
}

export async function signUp(page, who, user) {
  await page.waitForSelector("#phone", { state: "visible", timeout: WAIT });
  await page.fill("#phone", user.phone);
  await page.click("#send-code");
  await page.waitForSelector("#code", { state: "visible", timeout: WAIT });
  await page.fill("#code", testCode(user.phone));
  await page.click("#sign-in");
  // A new number answers SIGN_UP_REQUIRED (name form); a known one logs in.
  await waitFor(page, `${who}: name form or online`, () => {
    const f = document.getElementById("first-name");
    const s = document.getElementById("status");
    return (f && f.offsetParent !== null) || (s && s.textContent === "online");
  });
  if (await page.isVisible("#first-name")) {
    await page.fill("#first-name", user.first);
    await page.fill("#last-name", user.last);
    await page.click("#sign-up");
  }
  return waitOnline(page, who);
}

/** Texts of the rendered messages in DOM order, with sender and own flag. */
export function messagesOf(page) {
  return page.$$eval("#messages .message", (els) =>
    els.map((e) => ({
      id: e.dataset.id,
      own: e.classList.contains("own"),
      sender: e.querySelector(".sender")?.textContent ?? "",
      text: e.querySelector(".text")?.textContent ?? "",
    })),
  );
}

export async function hasMessage(page, who, text, sender = null, timeout = WAIT) {
  await waitFor(
    page,
    `${who} to show message "${text}"${sender ? ` from ${sender}` : ""}`,
    ([text, sender]) =>
      [...document.querySelectorAll("#messages .message")].some(
        (e) =>
          e.querySelector(".text")?.textContent === text &&
          (sender === null || e.querySelector(".sender")?.textContent === sender),
      ),
    [text, sender],
    timeout,
  );
}

export async function lacksMessage(page, who, text) {
  await waitFor(
    page,
    `${who} no longer to show "${text}"`,
    (text) => ![...document.querySelectorAll("#messages .message .text")].some((e) => e.textContent === text),
    text,
  );
}

/** The bubble of the message with this text (the newest one). */
export async function bubble(page, text) {
  const all = page.locator("#messages .message").filter({ has: page.locator(".text", { hasText: text }) });
  return all.last();
}

/** Waits until the open chat is the one with this title. */
export async function inChat(page, title) {
  await waitFor(page, `chat "${title}" open`, (t) => document.getElementById("chat-title")?.textContent === t, title);
}

/** Opens a dialog by its title. */
export async function openDialog(page, title) {
  await page.click(`#dialogs .dialog:has(.title:text-is("${title}"))`, { timeout: WAIT });
  await inChat(page, title);
}

/** Starts the private chat with a phone's account; it is titled by their name. */
export async function startChat(page, phone, title) {
  await page.fill("#new-chat-phone", phone);
  await page.click("#new-chat");
  await inChat(page, title);
}

export async function send(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
}

export const pages = {};
let browser;

/** One page at both sizes: `${name}-wide.png` and `${name}-narrow.png`. */
export async function shotSizes(page, name) {
  for (const [size, viewport] of [["wide", WIDE], ["narrow", NARROW]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(150);
    const path = join(artifacts, `${name}-${size}.png`);
    await page.screenshot({ path });
    say(`SCREENSHOT ${path}`);
  }
  await page.setViewportSize(WIDE);
}

/** Every open page at both sizes. */
export async function shot(name) {
  for (const [who, page] of Object.entries(pages)) {
    try {
      if (!page.isClosed()) await shotSizes(page, `${name}-${who}`);
    } catch {
      /* page gone */
    }
  }
}

export async function launch(args = []) {
  mkdirSync(artifacts, { recursive: true });
  browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", ...args] });
  return browser;
}

/** A page in its own browser context (its own storage: its own session). */
export async function openPage(who, url, contextOptions = {}) {
  const ctx = await browser.newContext({ viewport: WIDE, ...contextOptions });
  const page = await ctx.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") say(`CONSOLE ${who} ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => say(`PAGEERROR ${who}: ${e.message}`));
  pages[who] = page;
  await page.goto(url, { timeout: WAIT });
  return page;
}

/** Runs a test body: `OK` and exit 0, or `FAIL <reason>`, screenshots and exit 1. */
export async function run(main) {
  try {
    if (urls.length < 2) throw new Error("COURIER_WEB_URLS needs the page URLs of at least 2 nodes");
    await main();
    say("OK");
    rl.close();
    await browser?.close();
    process.exit(0);
  } catch (e) {
    // One line for the driver (it matches `FAIL`); the full error on stderr.
    say(`FAIL ${String(e?.message ?? e).split("\n")[0]}`);
    console.error(e);
    await shot("fail");
    rl.close();
    await browser?.close().catch(() => {});
    process.exit(1);
  }
}
