// Node-run test of session.ts + wire.ts against the fake cluster (tests/fake.ts):
// login by token, live pushes, own sends, node death, reconnect to the next
// node, get_difference applying the missed messages once and in order.
import { FakeCluster, checks, installBrowserGlobals } from "./fake";

const store = new Map<string, string>([["courier.session", btoa("token")]]);
installBrowserGlobals(store);
const cluster = new FakeCluster();
cluster.install();
const { Session } = await import("../src/session");

const check = checks.check;
async function until(what: string, f: () => boolean, ms = 12000) {
  const ok = await checks.until(f, ms);
  if (!ok) check(what, false, "(timed out)");
  return ok;
}

const hash = "ab".repeat(32);
const s = new Session({
  version: 1, node_id: 1,
  nodes: [1, 2, 3].map((id) => ({ id, name: `n${id}`, url: `https://127.0.0.1:71${id}1/courier`, cert_sha256: [hash] })),
});
s.chatVisible = true;
void s.run();
check("online on node 1", await until("online", () => s.state === "online" && s.nodeId === 1));
check("dialog loaded", await until("dialog", () => s.chats.has(500n)));
cluster.post(2n, "m1");
const info = () => s.chats.get(500n)!;
check("live push applied", await until("push", () => info().messages.size === 1));
await s.openChat(500n);
s.send(500n, "own1");
check("own send placed from Sent", await until("sent", () => info().messages.size === 2 && s.outbox.length === 0));
check("title resolved", await until("title", () => s.chatTitle(info()) === "Bob Web"), s.chatTitle(info()));
cluster.kill(1);
cluster.post(2n, "k1"); cluster.post(2n, "k2"); cluster.post(2n, "k3");
check("reconnected to node 2", await until("node 2", () => s.state === "online" && s.nodeId === 2));
check("missed messages applied", await until("diff", () => info().messages.size === 5));
cluster.post(2n, "live-after");
check("live after failover", await until("live", () => info().messages.size === 6));
const texts = [...info().messages.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((m) => m.text);
check("order and once", JSON.stringify(texts) === JSON.stringify(["m1", "own1", "k1", "k2", "k3", "live-after"]), JSON.stringify(texts));
check("pts follows", info().pts === 6n, `pts=${info().pts}`);
check("read marked", await until("read", () => info().unread === 0n), `unread=${info().unread}`);
console.log(cluster.log.filter((l) => !l.endsWith("ping")).join(" "));
checks.done("failover test");
