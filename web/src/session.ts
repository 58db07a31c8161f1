// Session state of the web client: which node we are connected to, login,
// the chats we know with their pts, messages, read positions and typing, and
// the reconnect + get_difference catch-up. The UI (ui.ts) only reads this
// state and calls the action methods; it is told to redraw through `onChange`.

import { create } from "@bufbuild/protobuf";
import {
  ChatKind,
  ChatStateSchema,
  MediaKind,
  Role,
  type Chat,
  type ChatMember,
  type Session as DeviceSession,
  type ChatEvent,
  type ChatDifference,
  type Dialog,
  type Message,
  type Update,
  type User,
} from "./gen/client_pb";
import { Connection, CourierError, type NodeInfo, type RequestInit, type ResultCase, type ResultOf } from "./wire";
import { upload, type PendingFile, type UploadStats } from "./media";

export const CLIENT_VERSION = "courier-web/0.3";
const TOKEN_KEY = "courier.session";
const TYPING_EVERY_MS = 4000;
const MAX_PENDING_CHATS = 256; // chats not known yet whose events are held
const MAX_PENDING_PER_CHAT = 256;
const GAP_WAIT_MS = 500; // docs/protocol.md: hold an event past a gap up to 0.5 s
const PING_EVERY_MS = 2000;
const PING_TIMEOUT_MS = 3000;
const CONNECT_TIMEOUT_MS = 4000;

export type ConnState = "connecting" | "reconnecting" | "login" | "online";

export interface WebConfig {
  version: number;
  node_id: number;
  nodes: NodeInfo[];
}

export interface ChatInfo {
  chat: Chat;
  pts: bigint;
  /** Our own read position. */
  readMaxId: bigint;
  /** The highest read position of another member (from ReadUpTo events). */
  otherReadMaxId: bigint;
  unread: bigint;
  last?: Message;
  messages: Map<bigint, Message>;
  historyLoaded: boolean;
  /** Events past a pts gap, keyed by pts, waiting for the missing ones. */
  held: Map<bigint, ChatEvent>;
  gapTimer?: ReturnType<typeof setTimeout>;
  /** user id -> until (local clock, ms) */
  typing: Map<bigint, number>;
  /** Our role here (Dialog.role, RoleChange events). */
  role: Role;
  /** Older messages than the oldest loaded may exist. */
  olderMore: boolean;
  loadingOlder: boolean;
  /** Set by joins, leaves and role changes: an open member list reloads. */
  membersChanged?: boolean;
  /** My reactions set from this page (channels do not say who reacted). */
  myReactions?: Map<bigint, string>;
  /** Messages looked up one by one (quotes, the pinned one) outside the
   * history: the message, null when it is gone, undefined while asked. */
  extra?: Map<bigint, Message | null | undefined>;
}

export interface OutboxItem {
  chatId: bigint;
  randomId: bigint;
  text: string;
  /** The message this one answers (0: none). */
  replyTo: bigint;
  state: "sending" | "failed";
  error?: string;
  /** An attachment: uploaded first (resumable), then sent with the text as its caption. */
  file?: PendingFile;
}

/** Largest message text and media caption (the brief's limits). */
export const MAX_TEXT = 4096;
export const MAX_CAPTION = 1024;
/** Messages held per chat: the open chat is cut back to KEEP_OPEN when it
 * passes twice that while the user is at its end; others to KEEP_BACKGROUND. */
export const KEEP_OPEN = 300;
const KEEP_BACKGROUND = 100;
/** Send attempts that reached a node before a bubble says "not sent". */
const SEND_ATTEMPTS = 8;

function randomU64(): bigint {
  const b = new BigUint64Array(1);
  do crypto.getRandomValues(b);
  while (b[0] === 0n);
  return b[0]!;
}

function browserName(): string {
  const ua = navigator.userAgent;
  if (/Edg\//.test(ua)) return "Edge";
  if (/Firefox\//.test(ua)) return "Firefox";
  if (/Chrom(e|ium)\//.test(ua)) return "Chrome";
  if (/Safari\//.test(ua)) return "Safari";
  return "browser";
}

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const x of bytes) s += String.fromCharCode(x);
  return btoa(s);
}
function unb64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Session {
  state: ConnState = "connecting";
  statusDetail = "";
  nodeId: number | null = null;
  me: User | null = null;
  chats = new Map<bigint, ChatInfo>();
  users = new Map<bigint, User>();
  /** Private chat -> the other member. */
  peers = new Map<bigint, bigint>();
  outbox: OutboxItem[] = [];
  /** Set by the UI: the chat shown, and whether it can be marked read. */
  openChatId: bigint | null = null;
  chatVisible = false;

  onChange: () => void = () => {};
  onLoggedOut: () => void = () => {};
  /** A new message from someone else arrived live (not during a catch-up). */
  onIncoming: (info: ChatInfo, m: Message) => void = () => {};
  /** Why the last log-out happened, when it was not this page's doing. */
  loggedOutReason = "";

  private conn: Connection | null = null;
  private config: WebConfig;
  private token: Uint8Array | null = null;
  /** Nonzero per page load: our sends come back only in their replies. */
  private readonly ownSendsKey = randomU64();
  private clockSkew = 0; // server ms - local ms
  private syncing = false;
  private pendingUnknown = new Map<bigint, ChatEvent[]>();
  private dialogsRefresh: Promise<void> | null = null;
  private dialogsAgain = false;
  private lastTypingSent = new Map<bigint, number>();
  private usersInFlight = new Set<bigint>();
  private onlineWaiters: (() => void)[] = [];
  private readInFlight = new Map<bigint, bigint>();

  constructor(config: WebConfig) {
    this.config = config;
    const saved = localStorage.getItem(TOKEN_KEY);
    if (saved) {
      try {
        this.token = unb64(saved);
      } catch {
        localStorage.removeItem(TOKEN_KEY);
      }
    }
  }

  /** Tells the UI to redraw, and marks the open chat read if new messages
   * arrived in it while it is visible. */
  private notify(): void {
    this.onChange();
    queueMicrotask(() => this.maybeMarkRead());
  }

  get loggedIn(): boolean {
    return this.me !== null;
  }

  // ---------------------------------------------------------------- connection

  /** Runs forever: connect, serve, and on loss reconnect to the next node. */
  async run(): Promise<void> {
    let firstRound = true;
    let index = Math.max(0, this.config.nodes.findIndex((n) => n.id === this.config.node_id));
    let failures = 0;
    for (;;) {
      const nodes = this.config.nodes;
      if (nodes.length === 0) {
        this.setState("reconnecting", "no nodes in web.json");
        await sleep(2000);
        await this.refreshConfig();
        continue;
      }
      const node = nodes[index % nodes.length]!;
      this.setState(firstRound ? "connecting" : "reconnecting", `node ${node.id}`);
      let conn: Connection | null = null;
      try {
        conn = await Connection.open(node, CONNECT_TIMEOUT_MS);
        await this.serve(conn); // returns when the connection is gone
        failures = 0;
      } catch (e) {
        if (e instanceof CourierError && (e.code === "UNAUTHORIZED" || e.code === "SESSION_REVOKED")) {
          // The token is no good: forget it and log in again (same node).
          this.forgetLogin(e.code === "SESSION_REVOKED" ? "This session was terminated from another device." : "");
          conn?.close();
          continue;
        }
        failures++;
        conn?.close();
      }
      this.conn = null;
      firstRound = false;
      this.nodeId = null;
      this.setState("reconnecting", "");
      // Next node in /web.json order; after a whole round of failures back off
      // (bounded at 3 s), and try to refresh /web.json from the origin.
      index = (index + 1) % nodes.length;
      if (failures > 0 && failures % nodes.length === 0) {
        await sleep(Math.min(3000, 250 * 2 ** Math.min(4, failures / nodes.length)));
        void this.refreshConfig();
      } else {
        await sleep(150);
      }
    }
  }

  private async refreshConfig(): Promise<void> {
    try {
      const ctl = new AbortController();
      const t = setTimeout(() => ctl.abort(), 1500);
      const r = await fetch("web.json", { cache: "no-store", signal: ctl.signal });
      clearTimeout(t);
      if (!r.ok) return;
      const cfg = (await r.json()) as WebConfig;
      if (Array.isArray(cfg.nodes) && cfg.nodes.length > 0) this.config = cfg;
    } catch {
      /* origin unreachable: keep the list we have */
    }
  }

  /** Hello, catch-up, then live service until the connection ends. */
  private async serve(conn: Connection): Promise<void> {
    // Start reading pushes first: the push stream may open right after the hello.
    conn.startPushReader((u) => this.onUpdate(conn, u));
    const reply = await conn.hello(
      {
        case: "hello",
        value: {
          protocol: 1,
          clientVersion: CLIENT_VERSION,
          device: `Courier Web (${browserName()})`,
          sessionToken: this.token ?? new Uint8Array(),
          ownSendsKey: this.ownSendsKey,
        },
      },
      CONNECT_TIMEOUT_MS,
    );
    this.clockSkew = Number(reply.serverTimeMs) - Date.now();
    this.conn = conn;
    this.nodeId = Number(reply.nodeId);
    if (reply.authorized && reply.user) {
      this.me = reply.user;
      this.users.set(reply.user.id, reply.user);
      await this.catchUp(conn);
      this.setState("online", "");
    } else {
      if (this.token) this.forgetLogin(); // token not accepted
      this.setState("login", "");
    }
    this.wakeOnlineWaiters();
    void this.flushOutbox();
    const heartbeat = this.heartbeat(conn);
    const reason = await conn.closed;
    void heartbeat;
    this.statusDetail = reason;
  }

  /**
   * Browsers cannot tune QUIC keep-alives, so a node that dies silently
   * would only be noticed at the idle timeout. A ping every 2 s (answered
   * within 3 s) notices it in seconds and closes the connection.
   */
  private async heartbeat(conn: Connection): Promise<void> {
    let nonce = 1n;
    while (!conn.isClosed) {
      await sleep(PING_EVERY_MS);
      if (conn.isClosed) return;
      try {
        await conn.call({ case: "ping", value: { nonce: nonce++ } }, "pong", PING_TIMEOUT_MS);
      } catch (e) {
        if (e instanceof CourierError && !e.transient && e.code !== "FLOOD_WAIT") continue;
        conn.close(`heartbeat: ${(e as Error).message}`);
        return;
      }
    }
  }

  private setState(s: ConnState, detail: string): void {
    this.state = s;
    this.statusDetail = detail;
    this.notify();
  }

  private waitOnline(timeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.conn && !this.conn.isClosed && (this.state === "online" || this.state === "login")) {
          resolve(this.conn);
          return true;
        }
        return false;
      };
      if (check()) return;
      const t = setTimeout(() => reject(new CourierError("CONNECTION_LOST", "not connected")), timeoutMs);
      const waiter = () => {
        if (check()) clearTimeout(t);
        else this.onlineWaiters.push(waiter);
      };
      this.onlineWaiters.push(waiter);
    });
  }

  private wakeOnlineWaiters(): void {
    const w = this.onlineWaiters;
    this.onlineWaiters = [];
    w.forEach((f) => f());
  }

  /** A request on the current connection; waits (bounded) for one, and
   * retries transient failures (all callers send idempotent requests). */
  async call<C extends ResultCase>(method: RequestInit, expect: C, attempts = 3): Promise<ResultOf<C>> {
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      const conn = await this.waitOnline(20000);
      try {
        return await conn.call(method, expect);
      } catch (e) {
        lastErr = e;
        if (e instanceof CourierError && e.code === "SESSION_REVOKED" && this.loggedIn) {
          this.forgetLogin("This session was terminated from another device.");
        }
        if (!(e instanceof CourierError) || !e.transient) throw e;
        await sleep(300 * (i + 1));
      }
    }
    throw lastErr;
  }

  // ---------------------------------------------------------------- login

  async sendCode(phone: string): Promise<string> {
    const r = await this.call({ case: "sendCode", value: { phone } }, "sentCode", 1);
    return r.phoneCodeHash;
  }

  /** Returns false when the phone has no account (SIGN_UP_REQUIRED). */
  async signIn(phone: string, phoneCodeHash: string, code: string): Promise<boolean> {
    try {
      const auth = await this.call({ case: "signIn", value: { phone, phoneCodeHash, code } }, "authorization", 1);
      await this.loggedInWith(auth.sessionToken, auth.user);
      return true;
    } catch (e) {
      if (e instanceof CourierError && e.code === "SIGN_UP_REQUIRED") return false;
      throw e;
    }
  }

  async signUp(phone: string, phoneCodeHash: string, firstName: string, lastName: string): Promise<void> {
    const auth = await this.call(
      { case: "signUp", value: { phone, phoneCodeHash, firstName, lastName } },
      "authorization",
      1,
    );
    await this.loggedInWith(auth.sessionToken, auth.user);
  }

  private async loggedInWith(token: Uint8Array, user: User | undefined): Promise<void> {
    this.token = token;
    localStorage.setItem(TOKEN_KEY, b64(token));
    this.me = user ?? null;
    if (user) this.users.set(user.id, user);
    // The connection is now logged in (no second hello needed). If it died
    // meanwhile, the reconnect loop says hello with the new token instead.
    const conn = this.conn;
    if (conn && !conn.isClosed) {
      await this.catchUp(conn);
      if (!conn.isClosed) this.setState("online", "");
    }
  }

  async logOut(): Promise<void> {
    try {
      if (this.conn) await this.conn.call({ case: "logOut", value: {} }, "done");
    } catch {
      /* clear locally anyway */
    }
    this.forgetLogin();
    if (this.conn && !this.conn.isClosed) this.setState("login", "");
  }

  private forgetLogin(reason = ""): void {
    this.loggedOutReason = reason;
    localStorage.removeItem(TOKEN_KEY);
    this.token = null;
    this.me = null;
    this.chats.clear();
    this.users.clear();
    this.peers.clear();
    this.outbox = [];
    this.pendingUnknown.clear();
    this.openChatId = null;
    this.onLoggedOut();
    this.notify();
  }

  // ---------------------------------------------------------------- sync

  /** After a (re)login: get_difference for the chats we know, then the
   * dialog list (for chats we did not know, unread counts, order). */
  private async catchUp(conn: Connection): Promise<void> {
    this.syncing = true;
    try {
      if (this.chats.size > 0) await this.difference(conn, [...this.chats.keys()]);
      await this.loadDialogs(conn);
      if (this.openChatId !== null) {
        const info = this.chats.get(this.openChatId);
        if (info && !info.historyLoaded) await this.loadHistory(this.openChatId, conn);
      }
    } finally {
      this.syncing = false;
      // Pushes that came during the sync were held: apply what follows on.
      for (const info of this.chats.values()) this.drainHeld(info);
      this.notify();
      this.maybeMarkRead();
    }
  }

  /** A request on this connection during catch-up: UNAVAILABLE (a group
   * electing a leader after a node died) is retried here a few times rather
   * than dropping a good connection. */
  private async callOn<C extends ResultCase>(conn: Connection, method: RequestInit, expect: C): Promise<ResultOf<C>> {
    for (let i = 0; ; i++) {
      try {
        return await conn.call(method, expect);
      } catch (e) {
        const retry = e instanceof CourierError && (e.code === "UNAVAILABLE" || e.code === "INTERNAL") && i < 6 && !conn.isClosed;
        if (!retry) throw e;
        await sleep(250 * (i + 1));
      }
    }
  }

  /** get_difference for these chats, looping while the answer says `more`. */
  private async difference(conn: Connection, chatIds: bigint[]): Promise<void> {
    let ids = chatIds;
    for (let round = 0; round < 50 && ids.length > 0; round++) {
      const states = ids
        .map((id) => this.chats.get(id))
        .filter((c): c is ChatInfo => !!c)
        .map((c) => create(ChatStateSchema, { chatId: c.chat.id, pts: c.pts, readMaxId: c.readMaxId }));
      const diff = await this.callOn(conn, { case: "getDifference", value: { states } }, "difference");
      const again = new Set<bigint>();
      for (const cd of diff.chats) {
        const id = cd.chat?.id;
        if (id === undefined) continue;
        this.applyChatDifference(cd);
        if (cd.more && this.chats.has(id)) again.add(id);
      }
      // `diff.more`: some chats were left out for size; ask again for all
      // (up-to-date ones are simply not answered).
      ids = diff.more ? [...this.chats.keys()] : [...again];
    }
  }

  private applyChatDifference(cd: ChatDifference): void {
    const chat = cd.chat!;
    if (cd.gone) {
      this.forgetChat(chat.id);
      return;
    }
    let info = this.chats.get(chat.id);
    if (!info || cd.tooLong) {
      // Too far behind: drop local state, keep these newest messages.
      const fresh = this.newChatInfo(chat);
      if (info) {
        fresh.unread = info.unread;
        fresh.otherReadMaxId = info.otherReadMaxId;
        fresh.role = info.role;
      }
      info = fresh;
      this.chats.set(chat.id, info);
      for (const m of cd.messages) this.putMessage(info, m);
      info.pts = chat.pts;
      info.historyLoaded = info.messages.size > 0;
      if (cd.readMaxId > 0n) info.readMaxId = cd.readMaxId;
      return;
    }
    for (const ev of cd.events) this.applyInOrder(info, ev, true);
    if (cd.readMaxId > info.readMaxId) info.readMaxId = cd.readMaxId;
    info.chat = chat;
    if (!cd.more && chat.pts > info.pts) {
      // Events we may not see still moved the pts (answered as kind-less events
      // normally; this is a safety net so we do not ask forever).
      info.pts = chat.pts;
    }
  }

  private newChatInfo(chat: Chat): ChatInfo {
    return {
      chat,
      pts: chat.pts,
      readMaxId: 0n,
      otherReadMaxId: 0n,
      unread: 0n,
      messages: new Map(),
      historyLoaded: false,
      held: new Map(),
      typing: new Map(),
      role: this.me && chat.creator === this.me.id && chat.kind !== ChatKind.PRIVATE ? Role.CREATOR : Role.MEMBER,
      olderMore: true,
      loadingOlder: false,
    };
  }

  /** get_dialogs (all pages), merged into what we know. */
  private async loadDialogs(conn: Connection): Promise<void> {
    let beforeMs = 0n;
    let beforeChat = 0n;
    for (let page = 0; page < 20; page++) {
      const d = await this.callOn(conn, { case: "getDialogs", value: { beforeMs, beforeChat, limit: 100 } }, "dialogs");
      for (const dialog of d.dialogs) this.mergeDialog(dialog);
      const lastChat = d.dialogs[d.dialogs.length - 1]?.chat;
      if (!d.more || !lastChat) break;
      beforeMs = lastChat.lastMs;
      beforeChat = lastChat.id;
    }
    // Events that came for chats we did not know yet.
    for (const [chatId, evs] of this.pendingUnknown) {
      const info = this.chats.get(chatId);
      if (!info) continue;
      this.pendingUnknown.delete(chatId);
      for (const ev of evs) this.onChatEvent(ev);
    }
    // Chats still not listed are not ours (or not any more): their events go.
    this.pendingUnknown.clear();
    this.notify();
  }

  private mergeDialog(d: Dialog): void {
    const chat = d.chat;
    if (!chat) return;
    let info = this.chats.get(chat.id);
    if (!info) {
      info = this.newChatInfo(chat);
      this.chats.set(chat.id, info);
    } else {
      info.chat = chat;
      if (chat.pts > info.pts && info.held.size === 0 && !this.syncing) {
        // Behind: fetch what we missed by difference rather than skipping it.
        this.scheduleGapFill(info, GAP_WAIT_MS);
      }
    }
    info.role = d.role;
    if (d.readMaxId > info.readMaxId) info.readMaxId = d.readMaxId;
    // Our read_history may still be on its way: a local read position past
    // the dialog's last message wins over the node's (older) unread count.
    info.unread = d.last && info.readMaxId >= d.last.id ? 0n : d.unread;
    if (d.last) {
      this.putMessage(info, d.last);
    }
    if (d.peer !== 0n) {
      // The node names a private chat's other member (`Dialog.peer`); every
      // chat the page knows comes through the dialogs (a new one by push or
      // difference makes it reload them).
      this.peers.set(chat.id, d.peer);
      this.ensureUsers([d.peer]);
    }
  }

  private refreshDialogs(): void {
    if (this.dialogsRefresh) {
      this.dialogsAgain = true;
      return;
    }
    this.dialogsRefresh = (async () => {
      try {
        do {
          this.dialogsAgain = false;
          const conn = await this.waitOnline(20000);
          await this.loadDialogs(conn);
        } while (this.dialogsAgain);
      } catch {
        /* the next reconnect reloads dialogs */
      } finally {
        this.dialogsRefresh = null;
      }
    })();
  }

  // ---------------------------------------------------------------- updates

  private onUpdate(conn: Connection, u: Update): void {
    if (conn !== this.conn && this.conn !== null) return; // a stale connection
    switch (u.kind.case) {
      case "chatEvent":
        this.onChatEvent(u.kind.value);
        break;
      case "typing": {
        const t = u.kind.value;
        if (this.me && t.user === this.me.id) break;
        const info = this.chats.get(t.chatId);
        if (!info) break;
        const until = Number(t.untilMs) - this.clockSkew;
        info.typing.set(t.user, until);
        this.ensureUsers([t.user]);
        setTimeout(() => this.notify(), Math.max(0, until - Date.now()) + 50);
        break;
      }
      case "ownRead": {
        const info = this.chats.get(u.kind.value.chatId);
        if (info && u.kind.value.maxId > info.readMaxId) {
          info.readMaxId = u.kind.value.maxId;
          this.recountUnread(info);
        }
        break;
      }
      case "sessionTerminated":
        this.forgetLogin("This session was terminated from another device.");
        break;
      default:
        break; // login codes and unknown kinds: nothing to show here
    }
    this.notify();
  }

  private onChatEvent(ev: ChatEvent): void {
    const info = this.chats.get(ev.chatId);
    if (!info) {
      // A chat we do not know (someone started it with us): learn it from
      // the dialog list, then replay these events against its pts.
      // Bounded: past the caps the events are dropped and the dialog list's
      // refresh (and get_difference later) brings the chat as it is.
      const list = this.pendingUnknown.get(ev.chatId) ?? [];
      if (list.length < MAX_PENDING_PER_CHAT && (this.pendingUnknown.has(ev.chatId) || this.pendingUnknown.size < MAX_PENDING_CHATS)) {
        list.push(ev);
        this.pendingUnknown.set(ev.chatId, list);
      }
      this.refreshDialogs();
      return;
    }
    this.applyInOrder(info, ev, false);
  }

  /**
   * pts rule (docs/protocol.md): apply an event whose pts is ours + 1, skip
   * one we have, hold one past a gap; if the gap is not filled within 0.5 s,
   * get_difference. During a catch-up everything past a gap is held.
   */
  private applyInOrder(info: ChatInfo, ev: ChatEvent, fromDifference: boolean): void {
    if (ev.pts <= info.pts) return; // already applied (dedupe)
    if (ev.pts === info.pts + 1n) {
      this.applyEvent(info, ev);
      info.pts = ev.pts;
      this.drainHeld(info);
      return;
    }
    if (fromDifference) {
      // The difference is authoritative and ordered: a jump means events we may
      // not see; apply and move on.
      this.applyEvent(info, ev);
      info.pts = ev.pts;
      this.drainHeld(info);
      return;
    }
    info.held.set(ev.pts, ev);
    if (!this.syncing) this.scheduleGapFill(info, GAP_WAIT_MS);
  }

  private drainHeld(info: ChatInfo): void {
    for (;;) {
      for (const p of [...info.held.keys()]) if (p <= info.pts) info.held.delete(p);
      const next = info.held.get(info.pts + 1n);
      if (!next) break;
      info.held.delete(next.pts);
      this.applyEvent(info, next);
      info.pts = next.pts;
    }
    if (info.held.size === 0 && info.gapTimer) {
      clearTimeout(info.gapTimer);
      info.gapTimer = undefined;
    }
  }

  private scheduleGapFill(info: ChatInfo, delay: number): void {
    if (info.gapTimer) return;
    info.gapTimer = setTimeout(async () => {
      info.gapTimer = undefined;
      if (this.syncing) return;
      try {
        const conn = await this.waitOnline(20000);
        await this.difference(conn, [info.chat.id]);
        this.drainHeld(info);
        if (info.held.size > 0) {
          // Still a gap the difference did not cover: apply what we hold in order.
          for (const p of [...info.held.keys()].sort((a, b) => (a < b ? -1 : 1))) {
            const ev = info.held.get(p)!;
            info.held.delete(p);
            if (ev.pts > info.pts) {
              this.applyEvent(info, ev);
              info.pts = ev.pts;
            }
          }
        }
      } catch {
        /* reconnect's catch-up covers it */
      }
      this.notify();
      this.maybeMarkRead();
    }, delay);
  }

  private applyEvent(info: ChatInfo, ev: ChatEvent): void {
    const k = ev.kind;
    switch (k.case) {
      case "newMessage": {
        const m = k.value;
        const isNew = !info.messages.has(m.id);
        this.putMessage(info, m);
        info.typing.delete(m.from);
        const mine = this.me !== null && m.from === this.me.id;
        if (isNew && !mine && m.id > info.readMaxId) info.unread += 1n;
        if (mine && m.id > info.readMaxId) info.readMaxId = m.id; // own sends are read
        this.ensureUsers([m.from]);
        if (isNew && !mine && !this.syncing) this.onIncoming(info, m);
        // A chat in the background keeps its newest messages only.
        if (info.chat.id !== this.openChatId && info.messages.size > KEEP_BACKGROUND * 2) this.trimHistory(info, KEEP_BACKGROUND);
        break;
      }
      case "edited":
      case "reactions":
        if (info.messages.has(k.value.id) || info.last?.id === k.value.id) this.putMessage(info, k.value);
        break;
      case "deleted":
      case "hidden":
        for (const id of k.value.ids) {
          const m = info.messages.get(id);
          if (m) {
            info.messages.delete(id);
            if (this.me && m.from !== this.me.id && id > info.readMaxId && info.unread > 0n) info.unread -= 1n;
          }
          if (info.last?.id === id) info.last = this.newestIn(info);
        }
        break;
      case "read": {
        const r = k.value;
        if (this.me && r.user === this.me.id) {
          if (r.maxId > info.readMaxId) {
            info.readMaxId = r.maxId;
            this.recountUnread(info);
          }
        } else if (r.maxId > info.otherReadMaxId) {
          info.otherReadMaxId = r.maxId;
        }
        break;
      }
      case "title":
        info.chat.title = k.value;
        break;
      case "left":
        info.membersChanged = true;
        if (this.me && k.value === this.me.id) this.forgetChat(info.chat.id);
        break;
      case "pinned":
        info.chat.pinned = k.value;
        break;
      case "role":
        if (this.me && k.value.user === this.me.id) info.role = k.value.role;
        info.membersChanged = true;
        break;
      case "joined":
        info.membersChanged = true;
        break;
      default:
        break; // kind-less: only the pts moves
    }
  }

  private putMessage(info: ChatInfo, m: Message): void {
    if (m.deleted) {
      info.messages.delete(m.id);
      return;
    }
    info.messages.set(m.id, m);
    if (!info.last || m.id >= info.last.id) {
      info.last = m;
      if (m.dateMs > info.chat.lastMs) info.chat.lastMs = m.dateMs;
    }
  }

  /** No longer a member: the chat goes, and is closed if it was open. */
  private forgetChat(chatId: bigint): void {
    this.chats.delete(chatId);
    if (this.openChatId === chatId) this.openChatId = null;
  }

  /** The oldest message id held for the chat. */
  private oldestIn(info: ChatInfo): bigint | undefined {
    let oldest: bigint | undefined;
    for (const id of info.messages.keys()) if (oldest === undefined || id < oldest) oldest = id;
    return oldest;
  }

  private newestIn(info: ChatInfo): Message | undefined {
    let best: Message | undefined;
    for (const m of info.messages.values()) if (!best || m.id > best.id) best = m;
    return best;
  }

  private recountUnread(info: ChatInfo): void {
    if (info.last && info.readMaxId >= info.last.id) {
      info.unread = 0n;
      return;
    }
    if (!this.me) return;
    let n = 0n;
    for (const m of info.messages.values()) if (m.from !== this.me.id && m.id > info.readMaxId) n++;
    if (info.historyLoaded || n < info.unread) info.unread = n;
  }

  // ---------------------------------------------------------------- names

  /** Requests the names of unknown users in one get_users batch. */
  ensureUsers(ids: bigint[]): void {
    const missing = [...new Set(ids)].filter((id) => id !== 0n && !this.users.has(id) && !this.usersInFlight.has(id));
    if (missing.length === 0) return;
    // Collect into one batch per tick (per render).
    missing.forEach((id) => this.usersInFlight.add(id));
    queueMicrotask(() => this.flushUsers());
  }

  private usersFlushQueued = false;
  private flushUsers(): void {
    if (this.usersFlushQueued) return;
    this.usersFlushQueued = true;
    setTimeout(() => {
      this.usersFlushQueued = false;
      const ids = [...this.usersInFlight].filter((id) => !this.users.has(id)).slice(0, 100);
      if (ids.length === 0) return;
      void this.fetchUsers(ids).finally(() => {
        ids.forEach((id) => this.usersInFlight.delete(id));
        // Any still in flight (more than 100) go in the next batch.
        if (this.usersInFlight.size > 0) this.flushUsers();
      });
    }, 0);
  }

  /** One get_users (at most 100 ids): names, online, last seen. */
  private fetchUsers(ids: bigint[]): Promise<void> {
    return this.call({ case: "getUsers", value: { ids } }, "users")
      .then((r) => {
        for (const u of r.users) this.users.set(u.id, u);
        this.notify();
      })
      .catch(() => {});
  }

  userName(id: bigint): string {
    const u = this.users.get(id);
    if (!u) return `user ${id}`;
    return `${u.firstName} ${u.lastName}`.trim() || `user ${id}`;
  }

  chatTitle(info: ChatInfo): string {
    if (info.chat.kind === ChatKind.PRIVATE) {
      const peer = this.peers.get(info.chat.id);
      if (peer !== undefined) return this.userName(peer);
      if (this.me && info.chat.members <= 1n) return this.userName(this.me.id); // saved messages
      return "Private chat";
    }
    return info.chat.title || `Chat ${info.chat.id}`;
  }

  typingText(info: ChatInfo): string {
    const now = Date.now();
    const names: string[] = [];
    for (const [user, until] of info.typing) {
      if (until <= now) info.typing.delete(user);
      else names.push(this.userName(user));
    }
    if (names.length === 0) return "";
    return names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  // ---------------------------------------------------------------- actions

  async openChat(chatId: bigint): Promise<void> {
    this.openChatId = chatId;
    this.notify();
    const info = this.chats.get(chatId);
    if (info && !info.historyLoaded) await this.loadHistory(chatId);
    this.maybeMarkRead();
  }

  private async loadHistory(chatId: bigint, conn?: Connection): Promise<void> {
    const method: RequestInit = { case: "getHistory", value: { chatId, limit: 50 } };
    const page = conn ? await this.callOn(conn, method, "messages") : await this.call(method, "messages");
    const info = this.chats.get(chatId);
    if (!info) return;
    for (const m of page.messages) this.putMessage(info, m);
    info.historyLoaded = true;
    info.olderMore = page.more;
    this.ensureUsers(page.messages.map((m) => m.from));
    this.notify();
  }

  /** read_history up to the newest message of the open chat, when visible. */
  maybeMarkRead(): void {
    const id = this.openChatId;
    if (id === null || !this.chatVisible || this.state !== "online") return;
    const info = this.chats.get(id);
    if (!info || !info.last) return;
    const maxId = info.last.id;
    if (maxId <= info.readMaxId && info.unread === 0n) return;
    if ((this.readInFlight.get(id) ?? 0n) >= maxId) return;
    this.readInFlight.set(id, maxId);
    info.unread = 0n;
    if (maxId > info.readMaxId) info.readMaxId = maxId;
    this.notify();
    void this.call({ case: "readHistory", value: { chatId: id, maxId } }, "done")
      .catch(() => {})
      .finally(() => {
        if (this.readInFlight.get(id) === maxId) this.readInFlight.delete(id);
      });
  }

  /** The account of a phone number. */
  async resolve(phone: string): Promise<User> {
    try {
      const user = await this.call({ case: "resolvePhone", value: { phone } }, "user");
      this.users.set(user.id, user);
      return user;
    } catch (e) {
      if (e instanceof CourierError && e.code === "BAD_REQUEST") throw new CourierError("BAD_REQUEST", `No account with the phone ${phone}.`);
      throw e;
    }
  }

  /** Starts (or finds) the private chat with the account of this phone. */
  async startPrivateChat(phone: string): Promise<bigint> {
    const user = await this.resolve(phone);
    const chat = await this.call(
      { case: "createChat", value: { kind: ChatKind.PRIVATE, members: [user.id] } },
      "chat",
    );
    this.addChat(chat);
    this.peers.set(chat.id, user.id);
    await this.openChat(chat.id);
    return chat.id;
  }

  send(chatId: bigint, text: string, replyTo = 0n, file?: PendingFile): void {
    const item: OutboxItem = { chatId, randomId: randomU64(), text, replyTo, state: "sending", file };
    this.outbox.push(item);
    // The message ends the typing the others see: the next keystroke says so again at once.
    this.lastTypingSent.delete(chatId);
    this.notify();
    this.enqueue(item);
  }

  retry(item: OutboxItem): void {
    item.state = "sending";
    item.error = undefined;
    this.notify();
    this.enqueue(item);
  }

  /** Sends of one chat go one at a time, so messages typed in a row keep
   * their order (concurrent streams may reach the chat's leader in any order). */
  private sendChains = new Map<string, Promise<void>>();
  private enqueue(item: OutboxItem): void {
    // Attachments keep their order in a chain of their own, so a long
    // upload does not hold up the text typed meanwhile (as in Telegram).
    const key = item.file ? `${item.chatId}:files` : String(item.chatId);
    const prev = this.sendChains.get(key) ?? Promise.resolve();
    const next = prev.then(() => this.deliver(item));
    this.sendChains.set(key, next);
    void next.finally(() => {
      if (this.sendChains.get(key) === next) this.sendChains.delete(key);
    });
  }

  /** Sends one outbox item, retrying transient failures with the SAME
   * random_id (the node answers a repeat with the first message). While the
   * page is offline the item just waits: only attempts that reached a node
   * count. An attachment is uploaded first; its parts survive reconnects. */
  private async deliver(item: OutboxItem): Promise<void> {
    let attempts = 0;
    while (attempts < SEND_ATTEMPTS) {
      // Logged out (or another account logged in) meanwhile: the outbox was
      // emptied and this message is no longer anyone's to send.
      // Cancelled attachments are dropped from the outbox too.
      if (!this.outbox.includes(item)) return;
      let conn: Connection;
      try {
        conn = await this.waitOnline(60000);
      } catch {
        continue; // offline: keep it queued, the page says so
      }
      try {
        const f = item.file;
        if (f && f.fileId === 0n) await upload(this, f, () => this.notify());
        if (!this.outbox.includes(item)) return;
        const media = f ? { fileId: f.fileId, kind: f.kind, durationSecs: f.durationSecs } : undefined;
        const resp = await conn.raw({
          case: "sendMessage",
          value: { chatId: item.chatId, randomId: item.randomId, text: item.text, replyTo: item.replyTo, media },
        });
        const info = this.chats.get(item.chatId);
        if (resp.result.case === "sent") {
          const sent = resp.result.value;
          if (info) {
            for (const ev of sent.events) this.applyInOrder(info, ev, false);
            if (sent.message) this.putMessage(info, sent.message);
          }
        } else if (resp.result.case === "message") {
          if (info) this.putMessage(info, resp.result.value); // the push follows; pts dedupes
        }
        this.dropFromOutbox(item);
        this.maybeMarkRead();
        return;
      } catch (e) {
        if (!this.outbox.includes(item)) return;
        const transient = e instanceof CourierError && (e.transient || e.code === "FLOOD_WAIT");
        if (!transient) {
          item.state = "failed";
          item.error = e instanceof CourierError ? e.code : String(e);
          this.notify();
          return;
        }
        attempts++;
        const wait = e instanceof CourierError && e.retryAfterSecs > 0 ? e.retryAfterSecs * 1000 : 500 * attempts;
        await sleep(Math.min(wait, 5000));
      }
    }
    item.state = "failed";
    item.error = "not sent";
    this.notify();
  }

  /** The last uploads' stats (for the debug hook), at most 10. */
  readonly uploadStats: UploadStats[] = [];

  private dropFromOutbox(item: OutboxItem): void {
    if (item.file?.stats) {
      this.uploadStats.push(item.file.stats);
      if (this.uploadStats.length > 10) this.uploadStats.shift();
    }
    this.outbox = this.outbox.filter((x) => x !== item);
    if (item.file) item.file.blob = null;
    this.notify();
  }

  /** Stops an attachment's upload and drops its bubble. */
  cancel(item: OutboxItem): void {
    if (item.file) item.file.cancelled = true;
    this.dropFromOutbox(item);
  }

  /** Called on a still-live connection (after reconnect): resend what waits. */
  private async flushOutbox(): Promise<void> {
    for (const item of this.outbox) if (item.state === "failed" && item.error === "not sent") this.retry(item);
  }

  /** set_typing at most every 4 s per chat. */
  typing(chatId: bigint): void {
    const now = Date.now();
    if (now - (this.lastTypingSent.get(chatId) ?? 0) < TYPING_EVERY_MS) return;
    this.lastTypingSent.set(chatId, now);
    if (!this.conn || this.state !== "online") return;
    void this.conn.call({ case: "setTyping", value: { chatId } }, "done").catch(() => {});
  }

  // ---------------------------------------------------------------- messages

  /** Keeps the newest `keep` messages of a chat (memory stays bounded on a
   * page left open for days); scrolling back loads the rest again. */
  trimHistory(info: ChatInfo, keep: number): void {
    if (info.messages.size <= keep) return;
    const ids = [...info.messages.keys()].sort((x, y) => (x < y ? 1 : x > y ? -1 : 0));
    for (const id of ids.slice(keep)) info.messages.delete(id);
    info.olderMore = true;
  }

  /** The next older page of the chat's history (scrolling back). */
  async loadOlder(chatId: bigint): Promise<void> {
    const info = this.chats.get(chatId);
    if (!info || info.loadingOlder || !info.olderMore || !info.historyLoaded) return;
    const oldest = this.oldestIn(info);
    if (oldest === undefined || oldest <= 1n) {
      info.olderMore = false;
      return;
    }
    info.loadingOlder = true;
    this.notify();
    try {
      const page = await this.call({ case: "getHistory", value: { chatId, before: oldest, limit: 50 } }, "messages");
      for (const m of page.messages) this.putMessage(info, m);
      info.olderMore = page.more && page.messages.length > 0;
      this.ensureUsers(page.messages.map((m) => m.from));
    } finally {
      info.loadingOlder = false;
      this.notify();
    }
  }

  /** Loads older pages until `id` is in the chat (a search result, a quote),
   * so the shown history stays contiguous. At most 20 pages. */
  async loadUntil(chatId: bigint, id: bigint): Promise<boolean> {
    const info = this.chats.get(chatId);
    if (!info) return false;
    if (!info.historyLoaded) await this.loadHistory(chatId);
    for (let i = 0; i < 20 && !info.messages.has(id) && info.olderMore; i++) {
      const oldest = this.oldestIn(info);
      if (oldest !== undefined && oldest < id) break; // it was deleted
      await this.loadOlder(chatId);
    }
    return info.messages.has(id);
  }

  async editMessage(chatId: bigint, id: bigint, text: string): Promise<void> {
    const m = await this.call({ case: "editMessage", value: { chatId, id, text } }, "message", 1);
    const info = this.chats.get(chatId);
    if (info) this.putMessage(info, m);
    this.notify();
  }

  /** Deletes for everyone, or (forAll false) hides them from my devices only. */
  async deleteMessages(chatId: bigint, ids: bigint[], forAll: boolean): Promise<void> {
    if (forAll) await this.call({ case: "deleteMessages", value: { chatId, ids } }, "done", 1);
    else await this.call({ case: "deleteForMe", value: { chatId, ids } }, "done", 1);
    const info = this.chats.get(chatId);
    if (info) {
      for (const id of ids) info.messages.delete(id);
      if (info.last && ids.includes(info.last.id)) info.last = this.newestIn(info);
    }
    this.notify();
  }

  /** Forwards messages; the copies arrive as the target chat's events. */
  async forward(toChat: bigint, fromChat: bigint, ids: bigint[]): Promise<void> {
    const m = await this.call(
      { case: "forwardMessages", value: { chatId: toChat, fromChat, ids, randomId: randomU64() } },
      "message",
    );
    const info = this.chats.get(toChat);
    if (info) this.putMessage(info, m);
    if (info && info.pts < info.chat.pts) this.scheduleGapFill(info, GAP_WAIT_MS);
    this.notify();
  }

  /** My reaction on a message; the same emoji again (or "") removes it. */
  async react(chatId: bigint, id: bigint, emoji: string): Promise<void> {
    const info = this.chats.get(chatId);
    const m = info?.messages.get(id);
    // Picking my reaction again takes it back (also in a channel, where
    // only this page knows which one is mine).
    const value = info && m && this.myReaction(info, m) === emoji ? "" : emoji;
    const answer = await this.call({ case: "sendReaction", value: { chatId, id, emoji: value } }, "message", 1);
    if (info) this.putMessage(info, answer);
    if (info) (info.myReactions ??= new Map()).set(id, value);
    this.notify();
  }

  /** My reaction on a message, as far as this page knows (a channel's
   * reactions carry counts, not who). */
  myReaction(info: ChatInfo, m: Message): string {
    const known = info.myReactions?.get(m.id);
    if (known !== undefined) return known;
    if (!this.me) return "";
    return m.reactions.find((r) => r.users.includes(this.me!.id))?.emoji ?? "";
  }

  async pin(chatId: bigint, id: bigint): Promise<void> {
    const chat = await this.call({ case: "pinMessage", value: { chatId, id } }, "chat", 1);
    const info = this.chats.get(chatId);
    if (info) info.chat.pinned = chat.pinned;
    this.notify();
  }

  /** Messages with this text, newest first (one page of up to 50). */
  async search(chatId: bigint, text: string): Promise<Message[]> {
    const r = await this.call({ case: "search", value: { chatId, text, limit: 50 } }, "messages");
    this.ensureUsers(r.messages.map((m) => m.from));
    return r.messages;
  }

  /**
   * A message of a chat for a quote or the pinned bar: from the history
   * held, else looked up once (a render calls this every time). Answers the
   * message, null when it is gone, or undefined while it is being asked for
   * (a redraw follows the answer). At most 200 looked-up messages per chat.
   */
  lookup(info: ChatInfo, id: bigint): Message | null | undefined {
    const held = info.messages.get(id);
    if (held) return held;
    const extra = (info.extra ??= new Map());
    if (extra.has(id)) return extra.get(id);
    extra.set(id, undefined);
    if (extra.size > 200) extra.delete(extra.keys().next().value!);
    void this.call({ case: "getHistory", value: { chatId: info.chat.id, before: id + 1n, limit: 1 } }, "messages").then(
      (page) => {
        const m = page.messages.find((x) => x.id === id && !x.deleted) ?? null;
        extra.set(id, m);
        if (m) this.ensureUsers([m.from]);
        this.notify();
      },
      () => extra.delete(id), // asked again at a later render
    );
    return undefined;
  }

  // ---------------------------------------------------------------- chats

  /** A group or channel with the accounts of these phones. */
  async createChat(kind: ChatKind, title: string, phones: string[]): Promise<bigint> {
    const members: bigint[] = [];
    for (const phone of phones) members.push((await this.resolve(phone)).id);
    const chat = await this.call({ case: "createChat", value: { kind, title, members } }, "chat", 1);
    this.addChat(chat);
    await this.openChat(chat.id);
    return chat.id;
  }

  /** A chat this page just made (or found): known from now on. */
  private addChat(chat: Chat): ChatInfo {
    let info = this.chats.get(chat.id);
    if (!info) {
      info = this.newChatInfo(chat);
      this.chats.set(chat.id, info);
    }
    return info;
  }

  async invite(chatId: bigint, phone: string): Promise<void> {
    const u = await this.resolve(phone);
    await this.call({ case: "invite", value: { chatId, users: [u.id] } }, "chat", 1);
    this.notify();
  }

  /** The members, at most 1,000 (five pages of 200). */
  async members(chatId: bigint): Promise<ChatMember[]> {
    const out: ChatMember[] = [];
    let after = 0n;
    for (let page = 0; page < 5; page++) {
      const r = await this.call({ case: "getMembers", value: { chatId, afterUser: after, limit: 200 } }, "members");
      out.push(...r.members);
      if (r.members.length < 200) break;
      after = r.members[r.members.length - 1]!.userId;
    }
    this.ensureUsers(out.map((m) => m.userId));
    return out;
  }

  async setAdmin(chatId: bigint, userId: bigint, admin: boolean): Promise<void> {
    await this.call({ case: "setAdmin", value: { chatId, userId, admin } }, "chat", 1);
  }

  async removeMember(chatId: bigint, userId: bigint): Promise<void> {
    await this.call({ case: "removeMember", value: { chatId, userId } }, "chat", 1);
  }

  async rename(chatId: bigint, title: string): Promise<void> {
    const chat = await this.call({ case: "setTitle", value: { chatId, title } }, "chat", 1);
    const info = this.chats.get(chatId);
    if (info) info.chat.title = chat.title;
    this.notify();
  }

  async leave(chatId: bigint): Promise<void> {
    if (!this.me) return;
    await this.call({ case: "removeMember", value: { chatId, userId: this.me.id } }, "chat", 1);
    this.forgetChat(chatId);
    this.notify();
  }

  /** Admins and the creator post in a channel; everyone in other chats. */
  canPost(info: ChatInfo): boolean {
    return info.chat.kind !== ChatKind.CHANNEL || info.role === Role.ADMIN || info.role === Role.CREATOR;
  }

  isAdmin(info: ChatInfo): boolean {
    return info.role === Role.ADMIN || info.role === Role.CREATOR;
  }

  // ---------------------------------------------------------------- presence

  /** Asks again for these users (online, last seen), whatever we hold. */
  refreshUsers(ids: bigint[]): void {
    const want = [...new Set(ids)].filter((id) => id !== 0n).slice(0, 100);
    if (want.length === 0 || !this.loggedIn) return;
    void this.fetchUsers(want);
  }

  /** The chat's other member, for a private chat. */
  peerOf(info: ChatInfo): bigint | undefined {
    return info.chat.kind === ChatKind.PRIVATE ? this.peers.get(info.chat.id) : undefined;
  }

  // ---------------------------------------------------------------- account

  async sessions(): Promise<DeviceSession[]> {
    const r = await this.call({ case: "getSessions", value: {} }, "sessions");
    return r.sessions;
  }

  async terminateSession(sessionId: bigint): Promise<void> {
    await this.call({ case: "terminateSession", value: { sessionId } }, "done", 1);
  }

  async terminateOtherSessions(): Promise<void> {
    await this.call({ case: "terminateOtherSessions", value: {} }, "done", 1);
  }

  /** Queues a file (photo, document or voice note) for a chat. */
  sendFile(chatId: bigint, blob: Blob, name: string, kind: MediaKind, caption: string, replyTo = 0n, durationSecs = 0): void {
    const file: PendingFile = {
      blob,
      name,
      mime: blob.type || "application/octet-stream",
      kind,
      durationSecs,
      uploadId: randomU64(),
      total: blob.size,
      done: new Set(),
      fileId: 0n,
      cancelled: false,
    };
    this.send(chatId, caption, replyTo, file);
  }
}
