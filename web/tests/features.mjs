// Courier Web, part 2, end to end (driven by cli/tests/web.rs with a 3-node
// cluster; the protocol with the driver is in harness.mjs). Three people on
// three nodes, each in their own browser context: Alice (node 1), Bob
// (node 2), Carol (node 3). Every feature is used through the page and
// checked on the other pages; the driver checks what a terminal user sees.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  artifacts, bubble, hasMessage, inChat, startChat, killNode, lacksMessage, launch, messagesOf, openDialog, openPage, run, say, send, shot,
  pages, shotSizes, signUp, step, urls, waitFor, waitOnline, WAIT,
} from "./harness.mjs";

const ALICE = { phone: "+9996610001", first: "Alice", last: "Web" };
const BOB = { phone: "+9996620002", first: "Bob", last: "Web" };
const CAROL = { phone: "+9996630003", first: "Carol", last: "Web" };
const BIG_MIB = Number(process.env.COURIER_BIG_MIB || 50);

/** Opens the ⋯ menu of the newest message with this text and picks an action. */
async function menu(page, text, action) {
  const b = await bubble(page, text);
  await b.hover();
  await b.locator(".more").click();
  await page.locator(`#message-menu ${action.startsWith("react:") ? `.react[data-emoji="${action.slice(6)}"]` : `[data-action="${action}"]`}`).click();
}

/** A notification spy and a switch for the page's visibility (headless
 * pages are always "visible"): the browser's state, not the page's code. */
const VISIBILITY_AND_NOTIFICATIONS = () => {
  window.__notes = [];
  const Real = window.Notification;
  if (Real) {
    const Spy = function (title, opts) {
      window.__notes.push({ title, body: opts?.body ?? "" });
      return new Real(title, opts);
    };
    Spy.requestPermission = (...a) => Real.requestPermission(...a);
    Object.defineProperty(Spy, "permission", { get: () => Real.permission });
    window.Notification = Spy;
  }
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", { get: () => (hidden ? "hidden" : "visible"), configurable: true });
  Object.defineProperty(Document.prototype, "hidden", { get: () => hidden, configurable: true });
  window.__setHidden = (h) => {
    hidden = h;
    document.dispatchEvent(new Event("visibilitychange"));
  };
};

async function sha256File(path) {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk);
  return h.digest("hex");
}

/** Clicks something that makes the page download, and hashes what it saved. */
async function downloaded(page, click) {
  const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 120_000 }), click()]);
  const path = await dl.path();
  return { name: dl.suggestedFilename(), sha: await sha256File(path) };
}

async function main() {
  step("launch");
  await launch(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]);
  const a = await openPage("alice", urls[0]);
  await a.waitForSelector("#phone", { state: "visible", timeout: WAIT });
  await shotSizes(a, "p2-00-login");
  await signUp(a, "alice", ALICE);
  const b = await openPage("bob", urls[1], { permissions: ["notifications"] });
  await b.addInitScript(VISIBILITY_AND_NOTIFICATIONS);
  await b.reload();
  await signUp(b, "bob", BOB);
  // Carol's system is dark: the page follows it (her screenshots are the dark theme).
  const c = await openPage("carol", urls[2], { colorScheme: "dark" });
  await signUp(c, "carol", CAROL);
  for (const p of [a, b, c]) p.on("dialog", (d) => void d.accept());

  // ---------------------------------------------------------------- messages
  step("private-chat");
  await startChat(a, BOB.phone, "Bob Web");
  await send(a, "hi bob");
  await openDialog(b, "Alice Web");
  await hasMessage(b, "bob", "hi bob", "Alice Web");

  step("presence");
  await waitFor(b, "bob sees alice online in the header", () => document.getElementById("chat-subtitle")?.textContent === "online");

  step("multi-line");
  await a.click("#composer");
  await a.keyboard.type("line one");
  await a.keyboard.press("Shift+Enter");
  await a.keyboard.type("line two");
  await a.keyboard.press("Enter");
  await hasMessage(b, "bob", "line one\nline two", "Alice Web");

  step("reply");
  await menu(b, "hi bob", "reply");
  await waitFor(b, "bob's reply bar", () => !document.getElementById("compose-context").hidden);
  await send(b, "a reply to hi");
  await waitFor(a, "alice sees the reply quoting her message", () =>
    [...document.querySelectorAll("#messages .message")].some(
      (m) => m.querySelector(".text")?.textContent === "a reply to hi" && m.querySelector(".reply-quote .what")?.textContent === "hi bob",
    ),
  );

  step("edit-with-up");
  // Up in the empty composer edits my last message.
  await send(a, "to be edited");
  await hasMessage(b, "bob", "to be edited");
  await a.click("#composer");
  await a.keyboard.press("ArrowUp");
  await waitFor(a, "the composer holds the last message", () => document.getElementById("composer").value === "to be edited");
  await a.fill("#composer", "edited: hello bob");
  await a.keyboard.press("Enter");
  await waitFor(b, "bob sees the edit", () =>
    [...document.querySelectorAll("#messages .message")].some(
      (m) => m.querySelector(".text")?.textContent === "edited: hello bob" && m.querySelector(".time")?.textContent.includes("edited"),
    ),
  );

  step("reactions");
  await menu(b, "hi bob", "react:👍");
  await waitFor(a, "alice sees bob's 👍", () =>
    [...document.querySelectorAll("#messages .message")].some(
      (m) => m.querySelector(".text")?.textContent === "hi bob" && m.querySelector('.reaction[data-emoji="👍"]')?.textContent === "👍 1",
    ),
  );

  step("pin");
  await menu(a, "hi bob", "pin");
  await waitFor(b, "bob's pinned bar", () => {
    const bar = document.getElementById("pinned-bar");
    return !bar.hidden && bar.querySelector(".text")?.textContent === "hi bob";
  });

  step("read-state");
  await waitFor(a, "alice's messages show read (✓✓)", () =>
    [...document.querySelectorAll("#messages .message.own")].some(
      (m) => m.querySelector(".text")?.textContent === "hi bob" && m.dataset.state === "read" && m.querySelector(".check")?.textContent === "✓✓",
    ),
  );
  await shot("p2-01-chat");

  step("menu-and-escape");
  {
    const m = await bubble(b, "hi bob");
    await m.hover();
    await m.locator(".more").click();
    await b.waitForSelector("#message-menu", { state: "visible", timeout: WAIT });
    await shotSizes(b, "p2-02-menu-bob");
    await b.keyboard.press("Escape");
    await b.waitForSelector("#message-menu", { state: "hidden", timeout: WAIT });
  }

  step("delete-for-everyone");
  await send(a, "oops, wrong chat");
  await hasMessage(b, "bob", "oops, wrong chat");
  await menu(a, "oops, wrong chat", "delete-all");
  await lacksMessage(b, "bob", "oops, wrong chat");
  await lacksMessage(a, "alice", "oops, wrong chat");

  step("delete-for-me");
  await menu(b, "line one\nline two", "delete-me");
  await lacksMessage(b, "bob", "line one\nline two");
  await a.waitForTimeout(500);
  if (!(await messagesOf(a)).some((m) => m.text === "line one\nline two")) throw new Error("delete-for-me removed alice's copy too");

  step("search");
  await a.click("#search-open");
  await a.fill("#search-input", "EDITED");
  await a.press("#search-input", "Enter");
  await waitFor(a, "a search result", () => [...document.querySelectorAll("#search-results .search-result .what")].some((e) => e.textContent === "edited: hello bob"));
  await shotSizes(a, "p2-03-search-alice");
  await a.click("#search-results .search-result");
  await waitFor(a, "the found message flashes", () => !!document.querySelector("#messages .message.flash"));
  await a.keyboard.press("Escape");

  // ---------------------------------------------------------------- groups
  step("create-group");
  await a.click("#new-group");
  await a.fill("#create-title", "Team");
  await a.fill("#create-phones", `${BOB.phone}, ${CAROL.phone}`);
  await shotSizes(a, "p2-04-new-group-alice");
  await a.click("#create-submit");
  await inChat(a, "Team");
  await send(a, "welcome to the team");
  await openDialog(c, "Team");
  await hasMessage(c, "carol", "welcome to the team", "Alice Web");

  step("forward");
  await openDialog(a, "Bob Web");
  await menu(a, "edited: hello bob", "forward");
  await a.click('#forward-list .forward-target:text-is("Team")');
  await waitFor(c, "carol sees the forward", () =>
    [...document.querySelectorAll("#messages .message")].some(
      (m) => m.querySelector(".text")?.textContent === "edited: hello bob" && m.querySelector(".fwd")?.textContent === "Forwarded from Alice Web",
    ),
  );

  step("typing-in-dialog-list");
  // Bob looks at the group; Alice types to him in their private chat.
  await openDialog(b, "Team");
  await openDialog(a, "Bob Web");
  await a.click("#composer");
  await a.keyboard.type("typing to bob", { delay: 30 });
  await waitFor(b, "bob's dialog list shows alice typing", () =>
    [...document.querySelectorAll("#dialogs .dialog")].some((d) => d.querySelector(".title")?.textContent === "Alice Web" && d.querySelector(".last.typing")?.textContent === "typing…"),
  );
  await a.keyboard.press("Enter");

  step("unread-in-title-and-notification");
  await b.evaluate(() => window.__setHidden(true));
  await send(a, "are you there?");
  await waitFor(b, "bob's tab title counts unread", () => /^\(\d+\) Courier$/.test(document.title));
  await waitFor(b, "bob got a desktop notification", () => window.__notes.some((n) => n.title === "Alice Web" && n.body === "are you there?"));
  await b.evaluate(() => window.__setHidden(false));

  step("members-and-admins");
  await openDialog(a, "Team");
  await a.click("#info-open");
  const bobRow = '#members .member:has(.name:text-is("Bob Web"))';
  await a.waitForSelector(bobRow, { timeout: WAIT });
  if ((await a.$$("#members .member")).length !== 3) throw new Error("the group lists 3 members");
  await a.click(`${bobRow} .make-admin`);
  await waitFor(a, "bob is admin", () =>
    [...document.querySelectorAll("#members .member")].some((m) => m.querySelector(".name")?.textContent === "Bob Web" && m.dataset.role === "ADMIN"),
  );
  await shotSizes(a, "p2-05-group-info-alice");
  await a.keyboard.press("Escape");

  step("admin-renames");
  await b.click("#info-open");
  await b.waitForSelector("#rename-row", { state: "visible", timeout: WAIT });
  await b.fill("#rename-input", "Team Courier");
  await b.click("#rename");
  await b.keyboard.press("Escape");
  for (const [who, p] of [["alice", a], ["carol", c]]) {
    await waitFor(p, `${who} sees the new name`, () => [...document.querySelectorAll("#dialogs .dialog .title")].some((t) => t.textContent === "Team Courier"));
  }

  step("leave-and-invite");
  await c.click("#info-open");
  await c.click("#leave");
  await waitFor(c, "carol's list without the group", () => ![...document.querySelectorAll("#dialogs .dialog .title")].some((t) => t.textContent === "Team Courier"));
  await a.click("#info-open");
  await waitFor(a, "2 members left", () => document.querySelectorAll("#members .member").length === 2);
  await a.fill("#invite-phone", CAROL.phone);
  await a.click("#invite");
  await waitFor(a, "3 members again", () => document.querySelectorAll("#members .member").length === 3);
  await a.keyboard.press("Escape");
  await waitFor(c, "carol sees the group again", () => [...document.querySelectorAll("#dialogs .dialog .title")].some((t) => t.textContent === "Team Courier"));
  await openDialog(c, "Team Courier");
  await shotSizes(c, "p2-05-group-carol-dark");

  // ---------------------------------------------------------------- channels
  step("channel");
  await a.click("#new-channel");
  await a.fill("#create-title", "Courier News");
  await a.fill("#create-phones", BOB.phone);
  await a.click("#create-submit");
  await inChat(a, "Courier News");
  await send(a, "first post");
  await openDialog(b, "Courier News");
  await hasMessage(b, "bob", "first post");
  if (!(await b.isHidden(".composer-row")) || !(await b.isVisible("#channel-note"))) throw new Error("a subscriber has a composer in a channel");
  if (!(await a.isVisible(".composer-row"))) throw new Error("the channel's creator has no composer");
  await menu(b, "first post", "react:🔥");
  await waitFor(b, "bob's reaction counted", () => document.querySelector('#messages .reaction[data-emoji="🔥"]')?.textContent === "🔥 1");
  await shot("p2-06-channel");

  // ---------------------------------------------------------------- history
  step("history-scroll-back");
  await openDialog(b, "Alice Web");
  for (let i = 1; i <= 70; i++) await send(b, `count ${i}`);
  await hasMessage(b, "bob", "count 70");
  await waitFor(a, "alice's dialog list has the last one", () =>
    [...document.querySelectorAll("#dialogs .dialog .last")].some((e) => e.textContent === "count 70"),
  );
  await a.reload();
  await waitOnline(a, "alice");
  await openDialog(a, "Bob Web");
  await hasMessage(a, "alice", "count 70");
  const before = await a.evaluate(() => {
    const box = document.getElementById("messages");
    const first = box.querySelector(".message");
    return { count: box.querySelectorAll(".message").length, id: first.dataset.id };
  });
  await a.evaluate(() => (document.getElementById("messages").scrollTop = 0));
  const anchorTop = await a.evaluate((id) => document.querySelector(`#messages .message[data-id="${id}"]`).getBoundingClientRect().top, before.id);
  await waitFor(a, "older messages above", (n) => document.querySelectorAll("#messages .message").length > n, before.count);
  await a.waitForTimeout(300);
  const after = await a.evaluate((id) => document.querySelector(`#messages .message[data-id="${id}"]`).getBoundingClientRect().top, before.id);
  say(`INFO scroll-back: ${before.count} messages, then more; the first one moved ${after - anchorTop} px`);
  if (Math.abs(after - anchorTop) > 40) throw new Error(`the view jumped ${after - anchorTop} px when older messages loaded`);
  await hasMessage(a, "alice", "hi bob");
  const seps = await a.$$eval("#messages .date-sep", (els) => els.map((e) => e.textContent));
  if (seps.length < 1 || seps[0] !== "Today") throw new Error(`date separators: ${JSON.stringify(seps)}`);

  step("channel-views");
  await openDialog(a, "Courier News");
  await waitFor(a, "alice sees bob's view", () =>
    [...document.querySelectorAll("#messages .message")].some((m) => m.querySelector(".text")?.textContent === "first post" && m.querySelector(".views")?.textContent === "👁 1"),
  );

  // ---------------------------------------------------------------- account
  step("sessions");
  const b2 = await openPage("bob2", urls[2]);
  await signUp(b2, "bob's second device", BOB);
  await b.click("#account-open");
  await waitFor(b, "bob's 2 sessions", () => document.querySelectorAll("#sessions .session").length === 2);
  const rows = await b.$$eval("#sessions .session", (els) => els.map((e) => e.textContent));
  say(`INFO sessions: ${JSON.stringify(rows)}`);
  if (!rows.some((r) => r.includes("node 3") && r.includes("Courier Web"))) throw new Error(`the session list lacks device/node: ${rows}`);
  await shotSizes(b, "p2-07-settings-bob");
  await b.click("#sessions .session:not(.current) .terminate");
  await waitFor(b2, "the terminated page shows the login at once", () => {
    const n = document.getElementById("login-notice");
    return !document.getElementById("login").hidden && !n.hidden && n.textContent.includes("terminated");
  });
  await shotSizes(b2, "p2-08-terminated");
  await b2.context().close();
  delete pages.bob2;
  await b.keyboard.press("Escape");

  // ---------------------------------------------------------------- media
  step("photo");
  await openDialog(a, "Bob Web");
  await openDialog(b, "Alice Web");
  const png = await a.evaluate(async () => {
    const cv = document.createElement("canvas");
    cv.width = 640;
    cv.height = 400;
    const g = cv.getContext("2d");
    const grad = g.createLinearGradient(0, 0, 640, 400);
    grad.addColorStop(0, "#2f7de1");
    grad.addColorStop(1, "#f2a03d");
    g.fillStyle = grad;
    g.fillRect(0, 0, 640, 400);
    g.fillStyle = "#fff";
    g.font = "bold 64px sans-serif";
    g.fillText("Courier", 180, 220);
    const blob = await new Promise((r) => cv.toBlob(r, "image/png"));
    return [...new Uint8Array(await blob.arrayBuffer())];
  });
  const photoPath = join(artifacts, "sunrise.png");
  writeFileSync(photoPath, Buffer.from(png));
  const photoSha = createHash("sha256").update(Buffer.from(png)).digest("hex");
  await a.fill("#composer", "a photo");
  await a.setInputFiles("#attach", photoPath);
  await waitFor(b, "bob sees the photo's preview", () =>
    [...document.querySelectorAll("#messages .message img.photo")].some((i) => i.complete && i.naturalWidth > 0 && i.closest(".message").querySelector(".text")?.textContent === "a photo"),
  );
  const bPhoto = (await bubble(b, "a photo")).locator("img.photo");
  await bPhoto.click();
  await waitFor(b, "the viewer shows the full photo", () => {
    const i = document.getElementById("viewer-img");
    return !document.getElementById("viewer").hidden && i.complete && i.naturalWidth === 640;
  });
  await shotSizes(b, "p2-09-viewer-bob");
  const gotPhoto = await downloaded(b, () => b.click("#viewer-download"));
  if (gotPhoto.sha !== photoSha) throw new Error("the downloaded photo differs from the uploaded one");
  if (gotPhoto.name !== "sunrise.png") throw new Error(`the photo downloaded as ${gotPhoto.name}`);
  await b.keyboard.press("Escape");

  step("drag-and-drop");
  await a.evaluate(async () => {
    const dt = new DataTransfer();
    dt.items.add(new File([new TextEncoder().encode("notes from a drop\n")], "notes.txt", { type: "text/plain" }));
    const pane = document.getElementById("chat");
    for (const type of ["dragenter", "dragover", "drop"]) pane.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await waitFor(b, "bob sees the dropped file", () => [...document.querySelectorAll("#messages .message .file .name")].some((n) => n.textContent === "notes.txt"));

  step("voice-note");
  await a.click("#record");
  await a.waitForTimeout(1500);
  await a.click("#record");
  await waitFor(b, "bob sees a voice message", () => !!document.querySelector("#messages .message .voice"));
  await b.locator("#messages .message .voice").last().click();
  await waitFor(b, "the voice message plays in the page", () => {
    const au = document.querySelector("#messages .message audio");
    return !!au && au.readyState >= 1;
  });
  await shot("p2-10-media");

  step("cancel-upload");
  const cancelPath = join(artifacts, "cancel-me.bin");
  writeFileSync(cancelPath, randomBytes(24 * 1024 * 1024));
  await a.setInputFiles("#attach", cancelPath);
  await a.waitForSelector(".pending-message .cancel", { timeout: WAIT });
  await a.click(".pending-message .cancel");
  await waitFor(a, "the cancelled upload's bubble gone", () => document.querySelectorAll(".pending-message").length === 0);

  step("big-upload-survives-its-node");
  const bigPath = join(artifacts, "big.bin");
  writeFileSync(bigPath, randomBytes(BIG_MIB * 1024 * 1024));
  const bigSha = await sha256File(bigPath);
  await a.setInputFiles("#attach", bigPath);
  await waitFor(a, "the upload past 10%", () => {
    const p = document.querySelector(".pending-message progress");
    return !!p && p.value / p.max > 0.1;
  }, undefined, 120_000);
  await shotSizes(a, "p2-11-uploading-alice");
  const aliceNode = Number(await a.getAttribute("#status", "data-node-id"));
  // The offline line may show only briefly (the next node answers at once):
  // the page records whether it showed.
  await a.evaluate(() => {
    const banner = document.getElementById("offline");
    new MutationObserver(() => banner.hidden || (window.__wasOffline = true)).observe(banner, { attributes: true });
  });
  await killNode(aliceNode);

  step("offline-queue");
  // Typed right after the kill: it waits in the outbox and goes out on the next node.
  await send(a, "typed while offline");
  await waitFor(a, "alice's page said it was offline", () => window.__wasOffline === true, undefined, 30_000);
  const newNode = await waitOnline(a, "alice", aliceNode, 60_000);
  say(`INFO alice moved from node ${aliceNode} to node ${newNode}`);
  if (Number(await b.getAttribute("#status", "data-node-id")) === aliceNode) await waitOnline(b, "bob", aliceNode, 60_000);
  await hasMessage(b, "bob", "typed while offline", "Alice Web", 60_000);
  await waitFor(b, "bob sees the big file", (name) => [...document.querySelectorAll("#messages .message .file .name")].some((n) => n.textContent === name), "big.bin", 300_000);
  const t0 = Date.now();
  const gotBig = await downloaded(b, () => b.locator('#messages .message .file:has(.name:text-is("big.bin"))').click());
  say(`INFO ${BIG_MIB} MiB downloaded in ${Date.now() - t0} ms`);
  if (gotBig.sha !== bigSha) throw new Error("the big file downloaded differs from the one uploaded");
  if (gotBig.name !== "big.bin") throw new Error(`the big file downloaded as ${gotBig.name}`);
  // The upload went on where it stopped: parts acknowledged by two nodes,
  // each part acknowledged once but those a node lost (finish hands them back).
  const up = (await a.evaluate(() => window.courierDebug.uploads())).find((u) => u.name === "big.bin");
  say(`INFO big upload: ${JSON.stringify(up)}`);
  if (!up || up.nodes.length < 2) throw new Error(`the upload did not continue on another node: ${JSON.stringify(up)}`);
  if (up.acks !== up.parts + up.missing) throw new Error(`the upload started over: ${JSON.stringify(up)}`);
  // Once each, in order, nothing pending.
  const texts = (await messagesOf(a)).map((m) => m.text);
  if (texts.filter((t) => t === "typed while offline").length !== 1) throw new Error("the queued message shows more than once");
  if ((await a.$$(".pending-message")).length !== 0) throw new Error("alice still has pending bubbles");
  await shot("p2-13-after-failover");
}

await run(main);
