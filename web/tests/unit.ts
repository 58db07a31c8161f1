// Node-run unit tests (no browser, no node cluster): frame reassembly and the
// session's pts ordering/dedupe. Run: npm run test:unit
import { create, toBinary } from "@bufbuild/protobuf";
import { FrameReader, frame, CourierError, MAX_FRAME } from "../src/wire";
import { checks, installBrowserGlobals } from "./fake";
import { ChatEventSchema, ChatSchema, ChatKind, MessageSchema, UpdateSchema, UserSchema, type ChatEvent } from "../src/gen/client_pb";

const store = new Map<string, string>();
installBrowserGlobals(store);
const { Session } = await import("../src/session");

const check = checks.check;

function streamOf(chunks: Uint8Array[]): ReadableStreamDefaultReader<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]!);
      else c.close();
    },
  }).getReader();
}
async function readAll(chunks: Uint8Array[]): Promise<Uint8Array[] | string> {
  const r = new FrameReader(streamOf(chunks));
  const out: Uint8Array[] = [];
  try {
    for (;;) {
      const f = await r.next();
      if (f === null) return out;
      out.push(f);
    }
  } catch (e) {
    return (e as CourierError).code;
  }
}

// ---- frames
const p1 = new Uint8Array([1, 2, 3]);
const p2 = new Uint8Array(70000).fill(7);
const p3 = new Uint8Array(0);
const all = new Uint8Array([...frame(p1), ...frame(p2), ...frame(p3)]);
{
  const r = await readAll([all]);
  check("three frames in one read", Array.isArray(r) && r.length === 3 && r[1]!.length === 70000 && r[2]!.length === 0);
}
{
  const bytes = [...all].map((b) => new Uint8Array([b]));
  const r = await readAll(bytes);
  check("one byte per read", Array.isArray(r) && r.length === 3 && r[0]![2] === 3 && r[1]![69999] === 7);
}
{
  const r = await readAll([all.subarray(0, 5), all.subarray(5, 9), all.subarray(9)]);
  check("split at odd places", Array.isArray(r) && r.length === 3);
}
{
  const big = new Uint8Array(4);
  new DataView(big.buffer).setUint32(0, MAX_FRAME + 1);
  check("oversize refused", (await readAll([big])) === "FRAME_TOO_LARGE");
  check("cut short refused", (await readAll([frame(p1).subarray(0, 5)])) === "BAD_FRAME");
  check("cut header refused", (await readAll([new Uint8Array([0, 0])])) === "BAD_FRAME");
}

// ---- pts ordering
const s = new Session({ version: 1, node_id: 1, nodes: [] });
const me = create(UserSchema, { id: 1n, firstName: "Me" });
(s as any).me = me;
const chat = create(ChatSchema, { id: 99n, kind: ChatKind.PRIVATE, creator: 1n, pts: 3n });
(s as any).chats.set(99n, (s as any).newChatInfo(chat));
const ev = (pts: bigint, id: bigint, text: string): ChatEvent =>
  create(ChatEventSchema, {
    chatId: 99n,
    pts,
    kind: { case: "newMessage", value: create(MessageSchema, { chatId: 99n, id, from: 2n, text }) },
  });
const push = (e: ChatEvent) =>
  (s as any).onUpdate(null, create(UpdateSchema, { kind: { case: "chatEvent", value: e } }));
// Note: onUpdate ignores updates from a stale connection; conn and s.conn are both null here.
push(ev(4n, 1n, "a"));
push(ev(6n, 3n, "c")); // past a gap: held
push(ev(4n, 1n, "a")); // duplicate: skipped
const info = (s as any).chats.get(99n);
check("in-order applied, gap held", info.pts === 4n && info.messages.size === 1 && info.held.size === 1);
push(ev(5n, 2n, "b"));
check("gap filled, held applied once", info.pts === 6n && info.messages.size === 3 && info.held.size === 0, `pts=${info.pts}`);
check("unread counted once each", info.unread === 3n, `unread=${info.unread}`);
(s as any).applyChatDifference({
  chat: create(ChatSchema, { id: 99n, kind: ChatKind.PRIVATE, pts: 7n }),
  events: [ev(5n, 2n, "b"), ev(6n, 3n, "c"), ev(7n, 4n, "d")],
  more: false, tooLong: false, messages: [], gone: false, readMaxId: 0n,
});
check("difference dedupes and applies new", info.pts === 7n && info.messages.size === 4 && info.unread === 4n);
if (info.gapTimer) clearTimeout(info.gapTimer);

checks.done("all unit tests");
