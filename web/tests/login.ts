// Node-run test against the fake cluster: no token -> sign in answers
// SIGN_UP_REQUIRED -> sign up; then a chat we did not know arrives by push.
import { FakeCluster, checks, installBrowserGlobals } from "./fake";

const store = new Map<string, string>();
installBrowserGlobals(store);
const cluster = new FakeCluster();
cluster.hideChat = true;
cluster.install();
const { Session } = await import("../src/session");

const check = checks.check;
const until = checks.until;
const s = new Session({ version: 1, node_id: 2, nodes: [1, 2, 3].map((id) => ({ id, name: `n${id}`, url: `https://127.0.0.1:71${id}1/courier`, cert_sha256: [] })) });
void s.run();
check("logged-out connection on the origin node", await until(() => s.state === "login" && s.nodeId === 2));
const hash = await s.sendCode("+9996610001");
let err = "";
try { await s.signIn("+9996610001", hash, "00000"); } catch (e) { err = (e as any).code; }
check("wrong code", err === "PHONE_CODE_INVALID", err);
check("sign-up required", (await s.signIn("+9996610001", hash, "11111")) === false);
await s.signUp("+9996610001", hash, "Alice", "Web");
check("online after sign-up", s.state === "online" && s.loggedIn);
check("token stored", store.get("courier.session") === btoa("\x01\x02\x03"));
cluster.hideChat = false;
cluster.post(2n, "hi from a new chat");
check("unknown chat learnt from dialogs", await until(() => s.chats.get(500n)?.unread === 1n), `unread=${s.chats.get(500n)?.unread}`);
check("its last message", s.chats.get(500n)?.last?.text === "hi from a new chat");
check("titled by the peer", await until(() => s.chatTitle(s.chats.get(500n)!) === "Bob Web"), s.chatTitle(s.chats.get(500n)!));
cluster.post(2n, "second");
check("next push applied on top", await until(() => s.chats.get(500n)?.unread === 2n && s.chats.get(500n)!.pts === 2n));
s.chatVisible = true;
await s.openChat(500n);
check("opened: read", await until(() => s.chats.get(500n)?.unread === 0n && cluster.aliceRead === 2n));
await s.logOut();
check("logged out", !s.loggedIn && !store.has("courier.session") && s.state === "login");
checks.done("login test");
