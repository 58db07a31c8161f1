// A fake in-memory courier cluster behind a fake `WebTransport` global, for
// node-run tests of wire.ts + session.ts (reconnect, difference, dedupe).
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ChatKind, ChatSchema, ChatEventSchema, MessageSchema, RequestSchema, ResponseSchema, UpdateSchema, UserSchema,
  type ChatEvent, type Request, type Response, type Update,
} from "../src/gen/client_pb";
import { frame, FrameReader } from "../src/wire";

type ResInit = NonNullable<MessageInitShape<typeof ResponseSchema>["result"]>;

export class FakeCluster {
  alive = new Set<number>([1, 2, 3]);
  users = [create(UserSchema, { id: 1n, firstName: "Alice", lastName: "Web" }), create(UserSchema, { id: 2n, firstName: "Bob", lastName: "Web" })];
  chat = create(ChatSchema, { id: 500n, kind: ChatKind.PRIVATE, creator: 1n, members: 2n, pts: 0n });
  events: ChatEvent[] = [];
  conns = new Set<FakeWT>();
  log: string[] = [];
  hideChat = false;
  aliceRead = 0n;

  post(from: bigint, text: string, except?: FakeWT): ChatEvent {
    const id = BigInt(this.events.filter((e) => e.kind.case === "newMessage").length + 1);
    this.chat.pts += 1n;
    const m = create(MessageSchema, { chatId: 500n, id, from, text, dateMs: BigInt(Date.now()) });
    const ev = create(ChatEventSchema, { chatId: 500n, pts: this.chat.pts, kind: { case: "newMessage", value: m } });
    this.events.push(ev);
    this.chat.lastId = id;
    for (const c of this.conns) if (c !== except && c.loggedIn) c.push(create(UpdateSchema, { kind: { case: "chatEvent", value: ev } }));
    return ev;
  }

  handle(c: FakeWT, req: Request): ResInit {
    const m = req.method;
    this.log.push(`${c.nodeId}:${m.case}`);
    switch (m.case) {
      case "hello":
        c.loggedIn = m.value.sessionToken.length > 0;
        if (c.loggedIn) queueMicrotask(() => c.openPush());
        return { case: "hello", value: { protocol: 1, nodeId: BigInt(c.nodeId), authorized: c.loggedIn, user: c.loggedIn ? this.users[0] : undefined, serverTimeMs: BigInt(Date.now()) } };
      case "ping": return { case: "pong", value: { nonce: m.value.nonce } };
      case "sendCode": return { case: "sentCode", value: { phoneCodeHash: "h1", timeoutSecs: 300, delivery: "test" } };
      case "signIn":
        return m.value.code === "11111"
          ? { case: "error", value: { code: "SIGN_UP_REQUIRED", message: "" } }
          : { case: "error", value: { code: "PHONE_CODE_INVALID", message: "2 tries left" } };
      case "signUp":
        c.loggedIn = true;
        queueMicrotask(() => c.openPush());
        return { case: "authorization", value: { user: this.users[0], sessionToken: new Uint8Array([1, 2, 3]), sessionId: 9n } };
      case "getDialogs": {
        if (this.hideChat) return { case: "dialogs", value: { dialogs: [] } };
        const last = [...this.events].reverse().find((e) => e.kind.case === "newMessage");
        const unread = BigInt(this.events.filter((e) => e.kind.case === "newMessage" && e.kind.value.from !== 1n && e.kind.value.id > this.aliceRead).length);
        return { case: "dialogs", value: { dialogs: [{ chat: this.chat, last: last?.kind.value as any, unread, readMaxId: this.aliceRead, peer: 2n }] } };
      }
      case "getDifference": {
        const chats = m.value.states.map((s) => ({ chat: this.chat, events: this.events.filter((e) => e.pts > s.pts) }))
          .filter((d) => d.events.length > 0);
        return { case: "difference", value: { chats } };
      }
      case "getHistory": {
        const msgs = this.events.filter((e) => e.kind.case === "newMessage").map((e) => e.kind.value as any).reverse();
        return { case: "messages", value: { messages: msgs } };
      }
      case "getUsers": return { case: "users", value: { users: this.users.filter((u) => m.value.ids.includes(u.id)) } };
      case "sendMessage": {
        const ev = this.post(1n, m.value.text, c);
        return { case: "sent", value: { message: ev.kind.value as any, events: [ev] } };
      }
      case "readHistory":
        if (m.value.maxId > this.aliceRead) this.aliceRead = m.value.maxId;
        return { case: "done", value: {} };
      case "setTyping": return { case: "done", value: {} };
      default: return { case: "error", value: { code: "BAD_REQUEST", message: `fake: ${m.case}` } };
    }
  }

  typing(user: bigint) {
    const u = create(UpdateSchema, { kind: { case: "typing", value: { chatId: 500n, user, untilMs: BigInt(Date.now() + 6000) } } });
    for (const c of this.conns) if (c.loggedIn) c.push(u);
  }

  kill(nodeId: number) {
    this.alive.delete(nodeId);
    for (const c of [...this.conns]) if (c.nodeId === nodeId) c.die();
  }

  install() {
    const cluster = this;
    (globalThis as any).WebTransport = class {
      constructor(url: string) {
        const nodeId = Number(/:71(\d)1/.exec(url)![1]);
        return new FakeWT(cluster, nodeId) as any;
      }
    };
  }
}

export class FakeWT {
  ready: Promise<void>;
  closed: Promise<{ closeCode: number; reason: string }>;
  incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;
  loggedIn = false;
  private uniCtl!: ReadableStreamDefaultController<ReadableStream<Uint8Array>>;
  private pushCtl: ReadableStreamDefaultController<Uint8Array> | null = null;
  private rejectClosed!: (e: Error) => void;
  private resolveClosed!: (v: { closeCode: number; reason: string }) => void;
  private dead = false;

  constructor(private cluster: FakeCluster, readonly nodeId: number) {
    this.closed = new Promise((res, rej) => { this.resolveClosed = res; this.rejectClosed = rej; });
    this.incomingUnidirectionalStreams = new ReadableStream({ start: (c) => { this.uniCtl = c; } });
    if (!cluster.alive.has(nodeId)) {
      this.ready = Promise.reject(new Error("connection refused"));
      this.dead = true;
      this.rejectClosed(new Error("refused"));
      return;
    }
    this.ready = Promise.resolve();
    cluster.conns.add(this);
  }

  openPush() {
    if (this.dead) return;
    this.uniCtl.enqueue(new ReadableStream({ start: (c) => { this.pushCtl = c; } }));
  }
  push(u: Update) {
    if (this.dead || !this.pushCtl) return;
    this.pushCtl.enqueue(frame(toBinary(UpdateSchema, u)));
  }
  die() {
    // A killed node: nothing answers any more (no close frame).
    this.dead = true;
    this.cluster.conns.delete(this);
  }
  close() {
    if (!this.dead) { this.dead = true; this.cluster.conns.delete(this); }
    this.rejectClosed(new Error("closed"));
  }

  async createBidirectionalStream() {
    if (this.dead) return new Promise<never>(() => {}); // hangs, like a dead peer
    let respCtl!: ReadableStreamDefaultController<Uint8Array>;
    const readable = new ReadableStream<Uint8Array>({ start: (c) => { respCtl = c; } });
    const chunks: Uint8Array[] = [];
    const writable = new WritableStream<Uint8Array>({
      write: (ch) => { chunks.push(ch); },
      close: async () => {
        const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
        let o = 0; for (const c of chunks) { all.set(c, o); o += c.length; }
        const r = new FrameReader(new ReadableStream<Uint8Array>({ start(c) { c.enqueue(all); c.close(); } }).getReader());
        const req = fromBinary(RequestSchema, (await r.next())!);
        if (this.dead) return; // never answers
        const resp: Response = create(ResponseSchema, { result: this.cluster.handle(this, req) });
        const bytes = frame(toBinary(ResponseSchema, resp));
        // Deliver in two pieces to exercise reassembly.
        respCtl.enqueue(bytes.subarray(0, 3)); respCtl.enqueue(bytes.subarray(3)); respCtl.close();
      },
    });
    return { readable, writable };
  }
}

/** The browser globals session.ts reads (`localStorage`, `navigator`), for
 * tests run by Node; `store` is the storage's content. */
export function installBrowserGlobals(store: Map<string, string>): void {
  (globalThis as any).localStorage = {
    getItem: (k: string) => store.get(k) ?? null,
    setItem: (k: string, v: string) => void store.set(k, v),
    removeItem: (k: string) => void store.delete(k),
  };
  if (!(globalThis as any).navigator) (globalThis as any).navigator = { userAgent: "node" };
}

/** Checks of a Node-run test: each prints a line; `done` exits non-zero
 * if any failed. */
export const checks = {
  failures: 0,
  check(name: string, ok: boolean, detail = ""): void {
    console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? " " + detail : ""}`);
    if (!ok) checks.failures++;
  },
  /** Polls `f` until it holds, at most `ms`. */
  async until(f: () => boolean, ms = 8000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  },
  done(what: string): never {
    console.log(checks.failures === 0 ? `${what} passed` : `${checks.failures} failed`);
    process.exit(checks.failures === 0 ? 0 : 1);
  },
};
