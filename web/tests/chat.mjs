// Browser end-to-end test of the Courier web client (part 1), driven by
// cli/tests/web.rs with a 3-node cluster: sign-up, a live chat, typing, read
// marks, a node killed under a page, and hostile sessions. The protocol with
// the driver is in harness.mjs.
import {
  hasMessage, killNode, launch, startChat, messagesOf, openPage, run, say, shot, shotSizes, signUp, step, urls, waitFor, waitOnline, WAIT,
} from "./harness.mjs";

const ALICE = { phone: "+9996610001", first: "Alice", last: "Web" };
const BOB = { phone: "+9996620002", first: "Bob", last: "Web" };
const AFTER_KILL = ["after kill 1", "after kill 2", "after kill 3"];

async function main() {
  step("launch");
  const browser = await launch();
  const open = openPage;

  step("alice-sign-up");
  const a = await open("alice", urls[0]);
  await a.waitForSelector("#phone", { state: "visible", timeout: WAIT });
  await shotSizes(a, "0-login");
  await signUp(a, "alice", ALICE);

  step("bob-sign-up");
  const b = await open("bob", urls[1]);
  await signUp(b, "bob", BOB);

  step("alice-new-chat");
  await startChat(a, BOB.phone, "Bob Web");

  step("alice-sends");
  await a.fill("#composer", "hello from alice");
  await a.press("#composer", "Enter");
  await hasMessage(a, "alice", "hello from alice", "Alice Web");
  if (!(await messagesOf(a)).some((m) => m.own && m.text === "hello from alice")) {
    throw new Error("alice's own message is not marked .own");
  }

  step("bob-sees-dialog");
  await waitFor(
    b,
    'bob\'s dialog "Alice Web" with unread 1',
    () =>
      [...document.querySelectorAll("#dialogs .dialog")].some(
        (d) =>
          d.querySelector(".title")?.textContent === "Alice Web" &&
          d.querySelector(".unread")?.textContent === "1" &&
          d.querySelector(".last")?.textContent?.includes("hello from alice"),
      ),
  );
  await shotSizes(b, "1-dialogs-bob");
  step("bob-opens-chat");
  await b.click('#dialogs .dialog:has(.title:text-is("Alice Web"))');
  await hasMessage(b, "bob", "hello from alice", "Alice Web");
  await waitFor(b, "bob's unread badge cleared", () =>
    [...document.querySelectorAll("#dialogs .dialog")].every((d) => (d.querySelector(".unread")?.textContent ?? "") === ""),
  );

  step("bob-types");
  await b.click("#composer");
  await b.keyboard.type("hi alice, bob here", { delay: 40 });
  await waitFor(a, 'alice to see "Bob Web is typing…"', () =>
    (document.getElementById("typing")?.textContent ?? "").includes("Bob Web is typing"),
  );
  step("bob-replies");
  await b.press("#composer", "Enter");
  await hasMessage(b, "bob", "hi alice, bob here", "Bob Web");
  await hasMessage(a, "alice", "hi alice, bob here", "Bob Web");
  await waitFor(a, "alice's typing line cleared", () => (document.getElementById("typing")?.textContent ?? "") === "");

  step("read-marks");
  // Bob has the chat open: his read reaches Alice as ✓✓ on her message.
  await waitFor(a, "alice's message marked read", () =>
    [...document.querySelectorAll("#messages .message.own")].some(
      (m) => m.querySelector(".text")?.textContent === "hello from alice" && m.classList.contains("read"),
    ),
  );

  step("html-is-text");
  // A message that is HTML shows as its text and runs nothing.
  const trap = '<img src=x onerror="window.__pwned=1">';
  await b.fill("#composer", trap);
  await b.press("#composer", "Enter");
  await hasMessage(a, "alice", trap, "Bob Web");
  const pwned = await a.evaluate(() => [window.__pwned, document.querySelectorAll("#messages img").length]);
  if (pwned[0] !== undefined || pwned[1] !== 0) throw new Error(`a message's HTML ran in the page: ${JSON.stringify(pwned)}`);
  await shot("1-chat");

  step("kill-alice-node");
  const aliceNode = Number(await a.getAttribute("#status", "data-node-id"));
  const bobNode = Number(await b.getAttribute("#status", "data-node-id"));
  await killNode(aliceNode);

  step("bob-sends-3");
  if (bobNode === aliceNode) await waitOnline(b, "bob", aliceNode);
  for (const text of AFTER_KILL) {
    await b.fill("#composer", text);
    await b.press("#composer", "Enter");
  }
  for (const text of AFTER_KILL) await hasMessage(b, "bob", text, "Bob Web");

  step("alice-reconnects");
  const newNode = await waitOnline(a, "alice", aliceNode);
  say(`INFO alice reconnected to node ${newNode}`);
  for (const text of AFTER_KILL) await hasMessage(a, "alice", text, "Bob Web");
  // Let any duplicate (a push and a difference for the same event) land.
  await a.waitForTimeout(1500);

  step("check-order");
  for (const [who, page] of [["alice", a], ["bob", b]]) {
    const msgs = await messagesOf(page);
    const texts = msgs.map((m) => m.text);
    for (const text of AFTER_KILL) {
      const n = texts.filter((t) => t === text).length;
      if (n !== 1) throw new Error(`${who} shows "${text}" ${n} times`);
    }
    const idx = AFTER_KILL.map((t) => texts.indexOf(t));
    if (!(idx[0] < idx[1] && idx[1] < idx[2])) throw new Error(`${who}: messages out of order: ${JSON.stringify(texts)}`);
    const ids = msgs.map((m) => m.id);
    if (new Set(ids).size !== ids.length) throw new Error(`${who}: duplicate message ids ${JSON.stringify(ids)}`);
    const pending = await page.$$eval(".pending-message", (els) => els.length);
    if (pending !== 0) throw new Error(`${who}: ${pending} messages still pending`);
  }
  await shot("2-after-failover");

  // A page of another origin may not use a visitor's browser as a client:
  // its WebTransport session to a node is refused (the CONNECT's Origin).
  step("foreign-origin-refused");
  const live = urls.find((_, i) => i + 1 !== aliceNode);
  const dir = await (await fetch(new URL("web.json", live))).json();
  const target = dir.nodes.find((n) => n.id === dir.node_id);
  const evil = await browser.newPage();
  await evil.route("https://evil.test/**", (r) => r.fulfill({ contentType: "text/html", body: "<!doctype html><title>evil</title>" }));
  await evil.goto("https://evil.test/");
  const outcome = await evil.evaluate(async ({ url, hashes }) => {
    const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
    const wt = new WebTransport(url, { serverCertificateHashes: hashes.map((h) => ({ algorithm: "sha-256", value: bytes(h) })) });
    wt.closed.catch(() => {});
    const timeout = new Promise((r) => setTimeout(() => r("timeout"), 8000));
    return Promise.race([wt.ready.then(() => "connected", (e) => `refused: ${e?.message ?? e}`), timeout]);
  }, { url: target.url, hashes: target.cert_sha256 });
  say(`INFO foreign origin: ${outcome}`);
  if (!outcome.startsWith("refused")) throw new Error(`a page from another origin got a session: ${outcome}`);
  await evil.close();

  // From an allowed origin, a session that skips the hello or sends
  // garbage gets the answers a QUIC client gets: BAD_REQUEST, then the close.
  step("hostile-sessions");
  const outcomes = await b.evaluate(async ({ url, hashes }) => {
    const bytes = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
    const run = async (payload) => {
      const wt = new WebTransport(url, { serverCertificateHashes: hashes.map((h) => ({ algorithm: "sha-256", value: bytes(h) })) });
      const closed = wt.closed.then((i) => `closed ${i.closeCode}`, (e) => `closed ${e?.message ?? e}`);
      await wt.ready;
      const s = await wt.createBidirectionalStream();
      const w = s.writable.getWriter();
      w.write(payload).catch(() => {});
      w.close().catch(() => {});
      const r = s.readable.getReader();
      let got = new Uint8Array();
      const deadline = Date.now() + 8000;
      while (Date.now() < deadline) {
        const { value, done } = await Promise.race([r.read(), new Promise((res) => setTimeout(() => res({ done: true }), 8000))]).catch(() => ({ done: true }));
        if (done) break;
        got = new Uint8Array([...got, ...value]);
      }
      const text = new TextDecoder().decode(got);
      const end = await Promise.race([closed, new Promise((res) => setTimeout(() => res("still open"), 8000))]);
      return { answer: text.includes("BAD_REQUEST") ? "BAD_REQUEST" : JSON.stringify(text), end };
    };
    // 3 bytes that are no protobuf Request; then a ping before any hello
    // (Request field 2, an empty Ping).
    const garbage = new Uint8Array([0, 0, 0, 3, 0xff, 0xff, 0xff]);
    const noHello = new Uint8Array([0, 0, 0, 2, 0x12, 0x00]);
    return { garbage: await run(garbage), noHello: await run(noHello) };
  }, { url: target.url, hashes: target.cert_sha256 });
  say(`INFO hostile sessions: ${JSON.stringify(outcomes)}`);
  for (const [what, o] of Object.entries(outcomes)) {
    if (o.answer !== "BAD_REQUEST") throw new Error(`${what}: answered ${o.answer}, not BAD_REQUEST`);
    if (o.end === "still open") throw new Error(`${what}: the session stayed open`);
  }
}

await run(main);
