// The browser soak (not in the suite; cli/tests/web.rs `page_soak`, run with
// `--run-ignored only`): two pages on two nodes exchange a message a second
// for COURIER_SOAK_MINUTES (default 30) while the driver kills a node every
// 2.5 minutes (in turn) and restarts it 20 s later. Every minute it checks
// that each message sent more than 20 s before shows exactly once on both
// pages, in the same order, each sender's in the order typed; at the end,
// all of them, and the pages' JS heap (after a forced GC) against the start.
import {
  killNode, launch, openDialog, openPage, run, say, send, shot, signUp, startChat, step, urls, waitLine,
} from "./harness.mjs";

const MINUTES = Number(process.env.COURIER_SOAK_MINUTES || 30);
const ALICE = { phone: "+9996610001", first: "Alice", last: "Soak" };
const BOB = { phone: "+9996620002", first: "Bob", last: "Soak" };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The page's JS heap after a full GC, in bytes (Chrome DevTools protocol). */
async function heap(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  const { usedSize } = await cdp.send("Runtime.getHeapUsage");
  await cdp.detach();
  return usedSize;
}

/** The soak numbers a page shows, in DOM order. */
function shown(page) {
  return page.$$eval("#messages .message .text", (els) =>
    els.map((e) => /^soak (\d+)$/.exec(e.textContent ?? "")?.[1]).filter(Boolean).map(Number),
  );
}

/**
 * Every number in (from, to] shows exactly once on both pages, in the same
 * order (the chat's: the order the cluster committed them), and each
 * sender's messages in the order they were typed. Across senders the order
 * may differ from the numbers: a send waiting out a node's death is
 * committed after the other person's next one.
 */
async function checkWindow(pages, from, to) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const problems = [];
    const orders = [];
    for (const [who, page] of pages) {
      const win = (await shown(page)).filter((n) => n > from && n <= to);
      orders.push(win.join(","));
      const missing = [];
      for (let n = from + 1; n <= to; n++) if (!win.includes(n)) missing.push(n);
      const dupes = win.filter((n, i) => win.indexOf(n) !== i);
      if (missing.length || dupes.length) problems.push(`${who}: missing ${JSON.stringify(missing.slice(0, 20))}, duplicated ${JSON.stringify(dupes.slice(0, 20))}`);
      for (const parity of [0, 1]) {
        const mine = win.filter((n) => n % 2 === parity);
        if (!mine.every((n, i) => i === 0 || n > mine[i - 1])) problems.push(`${who}: one sender's messages out of order: ${mine.join(",")}`);
      }
    }
    if (orders.some((o) => o !== orders[0])) problems.push(`the pages differ in order: ${orders.join(" | ")}`);
    if (problems.length === 0) return;
    if (Date.now() > deadline) throw new Error(`messages ${from + 1}..${to}: ${problems.join("; ")}`);
    await sleep(1000);
  }
}

async function main() {
  step("launch");
  await launch();
  const a = await openPage("alice", urls[0]);
  await signUp(a, "alice", ALICE);
  const b = await openPage("bob", urls[1]);
  await signUp(b, "bob", BOB);
  await startChat(a, BOB.phone, "Bob Soak");
  await send(a, "soak 1");
  await openDialog(b, "Alice Soak");
  await checkWindow([["alice", a], ["bob", b]], 0, 1);
  const heapStart = [await heap(a), await heap(b)];
  say(`INFO heap at start: alice ${heapStart[0]} B, bob ${heapStart[1]} B`);

  step("soak");
  const end = Date.now() + MINUTES * 60_000;
  let sent = 1;
  let checked = 1;
  let kills = 0;
  let nextKill = Date.now() + 150_000;
  let nextCheck = Date.now() + 60_000;
  const nodes = [1, 2, 3];
  let killed = null;
  let restartAt = 0;
  while (Date.now() < end) {
    const tick = Date.now();
    sent++;
    await send(sent % 2 ? a : b, `soak ${sent}`);
    if (killed === null && tick >= nextKill) {
      killed = nodes[kills % 3];
      kills++;
      await killNode(killed);
      restartAt = Date.now() + 20_000;
      nextKill = Date.now() + 150_000;
    }
    if (killed !== null && tick >= restartAt) {
      say(`RESTART ${killed}`);
      await waitLine("RESTARTED", 60_000);
      killed = null;
    }
    if (tick >= nextCheck) {
      // Messages older than 20 s must be on both pages by now (or within the check's minute).
      const upTo = sent - 20;
      if (upTo > checked) {
        await checkWindow([["alice", a], ["bob", b]], checked, upTo);
        say(`INFO ${Math.round((end - Date.now()) / 60000)} min left: ${upTo} messages checked, ${kills} kills, alice on node ${await a.getAttribute("#status", "data-node-id")}, bob on ${await b.getAttribute("#status", "data-node-id")}`);
        checked = upTo;
      }
      nextCheck = Date.now() + 60_000;
    }
    await sleep(Math.max(0, 1000 - (Date.now() - tick)));
  }
  if (killed !== null) {
    say(`RESTART ${killed}`);
    await waitLine("RESTARTED", 60_000);
  }

  step("drain");
  await checkWindow([["alice", a], ["bob", b]], checked, sent);
  for (const [who, p] of [["alice", a], ["bob", b]]) {
    if ((await p.$$(".pending-message")).length) throw new Error(`${who} has pending messages at the end`);
  }
  const heapEnd = [await heap(a), await heap(b)];
  say(`INFO soak: ${sent} messages over ${MINUTES} min, ${kills} node kills, each message shown once on both pages, in the same order`);
  say(`INFO heap at end: alice ${heapEnd[0]} B (start ${heapStart[0]}), bob ${heapEnd[1]} B (start ${heapStart[1]})`);
  await shot("soak-end");
  for (let i = 0; i < 2; i++) {
    // Steady: the page keeps a bounded window of each chat, so the heap may
    // not grow with the messages (a generous bound: start × 2 + 8 MB).
    if (heapEnd[i] > heapStart[i] * 2 + 8 * 1024 * 1024) throw new Error(`the heap grew from ${heapStart[i]} to ${heapEnd[i]} bytes`);
  }
}

await run(main);
