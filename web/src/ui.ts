// DOM rendering. All user content goes in through textContent only (never
// innerHTML). The static skeleton with the stable test hooks (#phone,
// #dialogs, #messages, ...) is in index.html; this file fills it.

import type { Message } from "./gen/client_pb";
import type { ChatInfo, OutboxItem, Session } from "./session";

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// One formatter each: `toLocaleTimeString` with options builds an
// `Intl.DateTimeFormat` per call, which was most of a render's time (every
// bubble's time, every render).
const HOUR_MINUTE = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const MONTH_DAY = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });

function timeOf(ms: bigint): string {
  if (ms === 0n) return "";
  const d = new Date(Number(ms));
  const now = new Date();
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  return (sameDay ? HOUR_MINUTE : MONTH_DAY).format(d);
}

function preview(m: Message | undefined): string {
  if (!m) return "";
  if (m.text) return m.text.replace(/\s+/g, " ");
  if (m.media) return "[media]";
  return "";
}

export class Ui {
  private readonly status = $("status");
  private readonly login = $("login");
  private readonly main = $("main");
  private readonly dialogs = $("dialogs");
  private readonly chatPane = $("chat");
  private readonly chatTitle = $("chat-title");
  private readonly messages = $("messages");
  private readonly typing = $("typing");
  private readonly me = $("me");
  private readonly logOut = $("log-out") as HTMLButtonElement;
  private readonly empty = $("chat-empty");
  private renderedChat: bigint | null = null;
  private messageEls = new Map<string, HTMLElement>();
  private dialogEls = new Map<bigint, HTMLElement>();
  private scheduled = false;

  constructor(private readonly s: Session) {}

  /** Coalesces many state changes into one render per frame. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // requestAnimationFrame stalls in hidden tabs; a timeout still renders.
    setTimeout(() => {
      this.scheduled = false;
      this.render();
    }, 0);
  }

  render(): void {
    const s = this.s;
    // ---- status line
    const label =
      s.state === "online" ? "online" : s.state === "login" ? "connected" : s.state === "connecting" ? "connecting…" : "reconnecting…";
    setText(this.status, label);
    this.status.dataset.state = s.state;
    this.status.dataset.nodeId = s.nodeId === null ? "" : String(s.nodeId);
    this.status.title = s.nodeId !== null ? `node ${s.nodeId}` : s.statusDetail;

    const loggedIn = s.loggedIn;
    this.login.hidden = loggedIn || s.state === "connecting";
    this.main.hidden = !loggedIn;
    this.logOut.hidden = !loggedIn;
    setText(this.me, loggedIn && s.me ? s.userName(s.me.id) : "");
    if (!loggedIn) {
      this.clearChat();
      return;
    }
    this.renderDialogs();
    this.renderChat();
  }

  private sortedChats(): ChatInfo[] {
    return [...this.s.chats.values()].sort((a, b) => {
      const ta = a.last?.dateMs ?? a.chat.lastMs;
      const tb = b.last?.dateMs ?? b.chat.lastMs;
      if (ta !== tb) return ta > tb ? -1 : 1;
      return a.chat.id > b.chat.id ? -1 : a.chat.id < b.chat.id ? 1 : 0;
    });
  }

  private renderDialogs(): void {
    const s = this.s;
    const chats = this.sortedChats();
    const needed: bigint[] = [];
    for (const info of chats) if (info.last) needed.push(info.last.from);
    s.ensureUsers(needed); // one get_users batch for this render
    const seen = new Set<bigint>();
    let cursor = this.dialogs.firstElementChild;
    for (const info of chats) {
      const id = info.chat.id;
      seen.add(id);
      let li = this.dialogEls.get(id);
      if (!li) {
        li = el("li", "dialog");
        li.dataset.chatId = String(id);
        li.tabIndex = 0;
        const top = el("div", "row");
        top.append(el("span", "title"), el("span", "time"));
        const bottom = el("div", "row");
        bottom.append(el("span", "last"), el("span", "unread"));
        li.append(top, bottom);
        li.addEventListener("click", () => this.onOpen?.(id));
        li.addEventListener("keydown", (e) => {
          if (e.key === "Enter") this.onOpen?.(id);
        });
        this.dialogEls.set(id, li);
      }
      setText(li.querySelector(".title") as HTMLElement, s.chatTitle(info));
      setText(li.querySelector(".time") as HTMLElement, timeOf(info.last?.dateMs ?? 0n));
      let last = preview(info.last);
      if (info.last && s.me && info.last.from === s.me.id) last = `You: ${last}`;
      else if (info.last && info.chat.kind !== 1 /* PRIVATE */) last = `${s.userName(info.last.from)}: ${last}`;
      setText(li.querySelector(".last") as HTMLElement, last);
      const unread = li.querySelector(".unread") as HTMLElement;
      setText(unread, info.unread > 0n ? String(info.unread) : "");
      unread.hidden = info.unread === 0n;
      li.classList.toggle("active", s.openChatId === id);
      if (li !== cursor) this.dialogs.insertBefore(li, cursor);
      else cursor = cursor.nextElementSibling;
    }
    for (const [id, li] of this.dialogEls) {
      if (!seen.has(id)) {
        li.remove();
        this.dialogEls.delete(id);
      }
    }
  }

  onOpen?: (chatId: bigint) => void;
  onRetry?: (item: OutboxItem) => void;

  private clearChat(): void {
    this.messages.replaceChildren();
    this.messageEls.clear();
    this.dialogs.replaceChildren();
    this.dialogEls.clear();
    this.renderedChat = null;
  }

  private renderChat(): void {
    const s = this.s;
    const id = s.openChatId;
    const info = id === null ? undefined : s.chats.get(id);
    document.body.classList.toggle("chat-open", !!info);
    this.chatPane.classList.toggle("empty", !info);
    this.empty.hidden = !!info;
    if (!info || id === null) {
      setText(this.chatTitle, "");
      setText(this.typing, "");
      this.messages.replaceChildren();
      this.messageEls.clear();
      this.renderedChat = null;
      return;
    }
    if (this.renderedChat !== id) {
      this.messages.replaceChildren();
      this.messageEls.clear();
      this.renderedChat = id;
    }
    setText(this.chatTitle, s.chatTitle(info));
    setText(this.typing, s.typingText(info));

    // Stick to the bottom if the user was there (or this is a fresh render).
    const box = this.messages;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40 || this.messageEls.size === 0;

    const list = [...info.messages.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    s.ensureUsers(list.map((m) => m.from));
    const keep = new Set<string>();
    let cursor = box.firstElementChild;
    for (const m of list) {
      const key = `m${m.id}`;
      keep.add(key);
      const e = this.messageEl(key, m, info);
      if (e !== cursor) box.insertBefore(e, cursor);
      else cursor = cursor.nextElementSibling;
    }
    for (const item of s.outbox) {
      if (item.chatId !== id) continue;
      const key = `o${item.randomId}`;
      keep.add(key);
      const e = this.outboxEl(key, item);
      if (e !== cursor) box.insertBefore(e, cursor);
      else cursor = cursor.nextElementSibling;
    }
    for (const [key, e] of this.messageEls) {
      if (!keep.has(key)) {
        e.remove();
        this.messageEls.delete(key);
      }
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  private messageEl(key: string, m: Message, info: ChatInfo): HTMLElement {
    const s = this.s;
    let e = this.messageEls.get(key);
    const own = !!s.me && m.from === s.me.id;
    if (!e) {
      e = el("div", own ? "message own" : "message");
      e.dataset.id = String(m.id);
      const meta = el("div", "meta");
      meta.append(el("span", "sender"), el("span", "time"), el("span", "check"));
      e.append(meta, el("div", "text"));
      this.messageEls.set(key, e);
    }
    setText(e.querySelector(".sender") as HTMLElement, s.userName(m.from));
    const edited = m.editMs > 0n ? " · edited" : "";
    setText(e.querySelector(".time") as HTMLElement, timeOf(m.dateMs) + edited);
    setText(e.querySelector(".text") as HTMLElement, m.text || (m.media ? "[media]" : ""));
    const check = e.querySelector(".check") as HTMLElement;
    if (own) {
      // Read state from the other side's ReadUpTo events (see NOTES.md).
      const read = info.otherReadMaxId >= m.id;
      setText(check, read ? "✓✓" : "✓");
      if (check.title !== (read ? "read" : "sent")) check.title = read ? "read" : "sent";
      e.classList.toggle("read", read);
    }
    return e;
  }

  private outboxEl(key: string, item: OutboxItem): HTMLElement {
    let e = this.messageEls.get(key);
    if (!e) {
      // Not `.message`: it has no id yet; the reply replaces it.
      e = el("div", "pending-message own");
      e.dataset.randomId = String(item.randomId);
      const meta = el("div", "meta");
      meta.append(el("span", "state"));
      e.append(meta, el("div", "text", item.text));
      e.addEventListener("click", () => {
        if (item.state === "failed") this.onRetry?.(item);
      });
      this.messageEls.set(key, e);
    }
    (e.querySelector(".state") as HTMLElement).textContent =
      item.state === "sending" ? "sending…" : `not sent (${item.error ?? "error"}) — click to retry`;
    e.classList.toggle("failed", item.state === "failed");
    return e;
  }
}

/** Sets an element's text only when it changed: a render touches every
 * bubble of the open chat, and an unchanged write still costs the browser
 * style and layout work for the whole list. */
function setText(e: HTMLElement, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}
