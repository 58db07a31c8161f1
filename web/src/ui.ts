// DOM rendering. All user content goes in through textContent only (never
// innerHTML). The static skeleton with the stable test hooks (#phone,
// #dialogs, #messages, ...) is in index.html; this file fills it.

import { ChatKind, MediaKind, type Message } from "./gen/client_pb";
import { KEEP_OPEN, type ChatInfo, type OutboxItem, type Session } from "./session";
import { BlobCache, download, humanSize, sentBytes } from "./media";

export function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el;
}

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
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
const LONG_DAY = new Intl.DateTimeFormat([], { weekday: "long", month: "long", day: "numeric", year: "numeric" });

function sameDay(a: Date, b: Date): boolean {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

export function timeOf(ms: bigint): string {
  if (ms === 0n) return "";
  const d = new Date(Number(ms));
  return (sameDay(d, new Date()) ? HOUR_MINUTE : MONTH_DAY).format(d);
}

/** "Today", "Yesterday" or the long date: the separator above a day's messages. */
export function dayLabel(ms: bigint): string {
  const d = new Date(Number(ms));
  const now = new Date();
  if (sameDay(d, now)) return "Today";
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  return LONG_DAY.format(d);
}

function dayKey(ms: bigint): string {
  const d = new Date(Number(ms));
  return `d${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "last seen 5 minutes ago" and the like. */
export function lastSeen(ms: bigint, now = Date.now()): string {
  if (ms === 0n) return "last seen recently";
  const ago = Math.max(0, now - Number(ms));
  const min = Math.floor(ago / 60000);
  if (min < 1) return "last seen just now";
  if (min < 60) return `last seen ${min} minute${min === 1 ? "" : "s"} ago`;
  const d = new Date(Number(ms));
  if (sameDay(d, new Date(now))) return `last seen today at ${HOUR_MINUTE.format(d)}`;
  return `last seen ${MONTH_DAY.format(d)} at ${HOUR_MINUTE.format(d)}`;
}

export function duration(secs: number): string {
  return `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
}

/** One line for a message in lists and quotes. */
export function preview(m: Message | undefined): string {
  if (!m) return "";
  const text = m.text.replace(/\s+/g, " ");
  if (m.media) {
    const what = m.media.kind === MediaKind.MEDIA_PHOTO ? "Photo" : m.media.kind === MediaKind.MEDIA_VOICE ? "Voice message" : m.media.file?.name || "File";
    return text ? `${what}: ${text}` : what;
  }
  return text;
}

/** A quoted message's line: its preview, "…" while it is asked for. */
function quoted(m: Message | null | undefined): string {
  return m === undefined ? "…" : m === null ? "Deleted message" : preview(m);
}

export const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🔥"];

export class Ui {
  private readonly status = $("status");
  private readonly offline = $("offline");
  private readonly login = $("login");
  private readonly loginNotice = $("login-notice");
  private readonly main = $("main");
  private readonly dialogs = $("dialogs");
  private readonly chatPane = $("chat");
  private readonly chatTitle = $("chat-title");
  private readonly chatSubtitle = $("chat-subtitle");
  private readonly pinnedBar = $("pinned-bar");
  private readonly messages = $("messages");
  private readonly typing = $("typing");
  private readonly me = $("me");
  private readonly logOut = $("log-out") as HTMLButtonElement;
  private readonly accountOpen = $("account-open") as HTMLButtonElement;
  private readonly empty = $("chat-empty");
  private readonly composerRow = document.querySelector(".composer-row") as HTMLElement;
  private readonly channelNote = $("channel-note");
  private renderedChat: bigint | null = null;
  private messageEls = new Map<string, HTMLElement>();
  private dialogEls = new Map<bigint, HTMLElement>();
  private scheduled = false;
  readonly previews = new BlobCache(200);

  onOpen?: (chatId: bigint) => void;
  onRetry?: (item: OutboxItem) => void;
  onCancel?: (item: OutboxItem) => void;
  onMenu?: (m: Message, anchor: HTMLElement) => void;
  onReact?: (m: Message, emoji: string) => void;
  onPhoto?: (m: Message) => void;
  onFile?: (m: Message) => void;
  onQuote?: (chatId: bigint, id: bigint) => void;
  /** The user scrolled near the top of a chat whose older history is not loaded. */
  onNeedOlder?: (chatId: bigint) => void;

  /** The chat was scrolled to its end: a resize (the window, the keyboard
   * on a phone, a bar above) keeps it there. */
  private stuckBottom = true;

  constructor(private readonly s: Session) {
    const box = this.messages;
    box.addEventListener("scroll", () => {
      this.stuckBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      const id = this.renderedChat;
      if (id !== null && box.scrollTop < 120) this.onNeedOlder?.(id);
    });
    new ResizeObserver(() => {
      if (this.stuckBottom) box.scrollTop = box.scrollHeight;
    }).observe(box);
  }

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
    this.offline.hidden = !loggedIn || s.state === "online";
    this.login.hidden = loggedIn || s.state === "connecting";
    this.main.hidden = !loggedIn;
    this.logOut.hidden = !loggedIn;
    this.accountOpen.hidden = !loggedIn;
    this.loginNotice.hidden = loggedIn || !s.loggedOutReason;
    setText(this.loginNotice, s.loggedOutReason);
    setText(this.me, loggedIn && s.me ? s.userName(s.me.id) : "");
    if (!loggedIn) {
      this.clearChat();
      if (document.title !== "Courier") document.title = "Courier";
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
    let unreadTotal = 0n;
    let cursor = this.dialogs.firstElementChild;
    for (const info of chats) {
      const id = info.chat.id;
      seen.add(id);
      unreadTotal += info.unread;
      let li = this.dialogEls.get(id);
      if (!li) {
        li = el("li", "dialog");
        li.dataset.chatId = String(id);
        li.tabIndex = 0;
        const top = el("div", "row");
        top.append(el("span", "kind"), el("span", "title"), el("span", "time"));
        const bottom = el("div", "row");
        bottom.append(el("span", "last"), el("span", "unread"));
        li.append(top, bottom);
        li.addEventListener("click", () => this.onOpen?.(id));
        li.addEventListener("keydown", (e) => {
          if (e.key === "Enter") this.onOpen?.(id);
        });
        this.dialogEls.set(id, li);
      }
      const kind = info.chat.kind === ChatKind.CHANNEL ? "📢" : info.chat.kind === ChatKind.GROUP ? "👥" : "";
      setText(li.querySelector(".kind") as HTMLElement, kind);
      setText(li.querySelector(".title") as HTMLElement, s.chatTitle(info));
      setText(li.querySelector(".time") as HTMLElement, timeOf(info.last?.dateMs ?? 0n));
      const typing = s.typingText(info);
      let last = preview(info.last);
      if (typing) last = info.chat.kind === ChatKind.PRIVATE ? "typing…" : typing;
      else if (info.last && s.me && info.last.from === s.me.id) last = `You: ${last}`;
      else if (info.last && info.chat.kind === ChatKind.GROUP) last = `${s.userName(info.last.from)}: ${last}`;
      const lastEl = li.querySelector(".last") as HTMLElement;
      setText(lastEl, last);
      lastEl.classList.toggle("typing", !!typing);
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
    const title = unreadTotal > 0n ? `(${unreadTotal}) Courier` : "Courier";
    if (document.title !== title) document.title = title;
  }

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
      this.pinnedBar.hidden = true;
      return;
    }
    const fresh = this.renderedChat !== id;
    if (fresh) {
      this.messages.replaceChildren();
      this.messageEls.clear();
      this.renderedChat = id;
    }
    setText(this.chatTitle, s.chatTitle(info));
    setText(this.chatSubtitle, this.subtitle(info));
    this.chatSubtitle.classList.toggle("online", this.chatSubtitle.textContent === "online");
    setText(this.typing, s.typingText(info));
    const canPost = s.canPost(info);
    this.composerRow.hidden = !canPost;
    this.channelNote.hidden = canPost;
    this.renderPinned(info);

    // Keep what the user looks at in place: stick to the bottom if they were
    // there; otherwise keep the first visible bubble where it was (older
    // pages are inserted above it).
    const box = this.messages;
    const atBottom = fresh || box.scrollHeight - box.scrollTop - box.clientHeight < 40 || this.messageEls.size === 0;
    let anchor: HTMLElement | null = null;
    let anchorTop = 0;
    if (!atBottom) {
      // Bubbles only: the loading line and a day's separator move when older
      // messages come in above them.
      for (const c of box.querySelectorAll<HTMLElement>(".message")) {
        const e = c;
        if (e.offsetTop + e.offsetHeight > box.scrollTop) {
          anchor = e;
          anchorTop = e.offsetTop - box.scrollTop;
          break;
        }
      }
    }

    if (atBottom && info.messages.size > KEEP_OPEN * 2) s.trimHistory(info, KEEP_OPEN);
    const list = [...info.messages.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const users: bigint[] = list.map((m) => m.from);
    for (const m of list) if (m.fwd) users.push(m.fwd.from);
    s.ensureUsers(users);
    const keep = new Set<string>();
    let cursor = box.firstElementChild;
    const put = (key: string, e: HTMLElement) => {
      keep.add(key);
      if (e !== cursor) box.insertBefore(e, cursor);
      else cursor = cursor.nextElementSibling;
    };
    if (info.olderMore && info.historyLoaded) put("older", this.olderEl(info));
    let day = "";
    for (const m of list) {
      const dk = dayKey(m.dateMs);
      if (dk !== day) {
        day = dk;
        put(dk, this.dateEl(dk, m.dateMs));
      }
      put(`m${m.id}`, this.messageEl(`m${m.id}`, m, info));
    }
    for (const item of s.outbox) {
      if (item.chatId !== id) continue;
      put(`o${item.randomId}`, this.outboxEl(`o${item.randomId}`, item));
    }
    for (const [key, e] of this.messageEls) {
      if (!keep.has(key)) {
        e.remove();
        this.messageEls.delete(key);
      }
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
    else if (anchor && anchor.isConnected) box.scrollTop = anchor.offsetTop - anchorTop;
    this.stuckBottom = atBottom;
  }

  private subtitle(info: ChatInfo): string {
    const s = this.s;
    const peer = s.peerOf(info);
    if (peer !== undefined) {
      if (s.typingText(info)) return "typing…";
      const u = s.users.get(peer);
      if (!u) return "";
      return u.online ? "online" : lastSeen(u.lastSeenMs);
    }
    const n = info.chat.members;
    if (info.chat.kind === ChatKind.CHANNEL) return `channel · ${n} subscriber${n === 1n ? "" : "s"}`;
    if (info.chat.kind === ChatKind.GROUP) return `${n} member${n === 1n ? "" : "s"}`;
    return "";
  }

  private renderPinned(info: ChatInfo): void {
    const id = info.chat.pinned;
    this.pinnedBar.hidden = id === 0n;
    if (id === 0n) return;
    setText(this.pinnedBar.querySelector(".text") as HTMLElement, quoted(this.s.lookup(info, id)));
    this.pinnedBar.dataset.id = String(id);
    ($("unpin") as HTMLButtonElement).hidden = !(info.chat.kind === ChatKind.PRIVATE || this.s.isAdmin(info));
  }

  private olderEl(info: ChatInfo): HTMLElement {
    let e = this.messageEls.get("older");
    if (!e) {
      e = el("div", "older");
      this.messageEls.set("older", e);
    }
    setText(e, info.loadingOlder ? "Loading earlier messages…" : "");
    return e;
  }

  private dateEl(key: string, ms: bigint): HTMLElement {
    let e = this.messageEls.get(key);
    if (!e) {
      e = el("div", "date-sep");
      e.append(el("span"));
      this.messageEls.set(key, e);
    }
    setText(e.firstElementChild as HTMLElement, dayLabel(ms));
    return e;
  }

  private messageEl(key: string, m: Message, info: ChatInfo): HTMLElement {
    const s = this.s;
    let e = this.messageEls.get(key);
    const own = !!s.me && m.from === s.me.id;
    const channel = info.chat.kind === ChatKind.CHANNEL;
    if (!e) {
      e = el("div", own && !channel ? "message own" : "message");
      e.dataset.id = String(m.id);
      const fwd = el("div", "fwd");
      const quote = el("button", "reply-quote");
      quote.type = "button";
      quote.append(el("span", "who"), el("span", "what"));
      quote.addEventListener("click", (ev) => {
        ev.stopPropagation();
        const cur = info.messages.get(m.id) ?? m;
        this.onQuote?.(info.chat.id, cur.replyTo);
      });
      const meta = el("div", "meta");
      meta.append(el("span", "sender"), el("span", "time"), el("span", "views"), el("span", "check"));
      const more = el("button", "more", "⋯");
      more.type = "button";
      more.title = "Actions";
      more.setAttribute("aria-label", "Message actions");
      const id = m.id;
      more.addEventListener("click", (ev) => {
        ev.stopPropagation();
        const cur = info.messages.get(id);
        if (cur) this.onMenu?.(cur, e!);
      });
      e.addEventListener("contextmenu", (ev) => {
        const cur = info.messages.get(id);
        if (!cur) return;
        ev.preventDefault();
        this.onMenu?.(cur, e!);
      });
      // Who and when first, then what it forwards or answers, then the content.
      e.append(more, meta, fwd, quote, el("div", "media"), el("div", "text"), el("div", "reactions"));
      this.messageEls.set(key, e);
    }
    e.dataset.state = own ? (info.otherReadMaxId >= m.id ? "read" : "sent") : "";
    // Forwarded from
    const fwd = e.querySelector(".fwd") as HTMLElement;
    fwd.hidden = !m.fwd;
    if (m.fwd) setText(fwd, `Forwarded from ${s.userName(m.fwd.from)}`);
    // The quoted message
    const quote = e.querySelector(".reply-quote") as HTMLElement;
    quote.hidden = m.replyTo === 0n;
    if (m.replyTo !== 0n) {
      quote.dataset.replyTo = String(m.replyTo);
      const q = s.lookup(info, m.replyTo);
      setText(quote.querySelector(".who") as HTMLElement, q ? s.userName(q.from) : "");
      setText(quote.querySelector(".what") as HTMLElement, quoted(q));
    }
    setText(e.querySelector(".sender") as HTMLElement, channel ? s.chatTitle(info) : s.userName(m.from));
    const edited = m.editMs > 0n ? " · edited" : "";
    setText(e.querySelector(".time") as HTMLElement, timeOf(m.dateMs) + edited);
    const views = e.querySelector(".views") as HTMLElement;
    setText(views, channel && m.views > 0n ? `👁 ${m.views}` : "");
    this.renderMedia(e.querySelector(".media") as HTMLElement, m, info);
    const text = e.querySelector(".text") as HTMLElement;
    setText(text, m.text);
    text.hidden = m.text === "";
    this.renderReactions(e.querySelector(".reactions") as HTMLElement, m, info);
    const check = e.querySelector(".check") as HTMLElement;
    if (own && !channel) {
      // Read state from the other side's ReadUpTo events (see NOTES.md).
      const read = info.otherReadMaxId >= m.id;
      setText(check, read ? "✓✓" : "✓");
      if (check.title !== (read ? "read" : "sent")) check.title = read ? "read" : "sent";
      e.classList.toggle("read", read);
    }
    return e;
  }

  private renderReactions(box: HTMLElement, m: Message, info: ChatInfo): void {
    const mine = this.s.myReaction(info, m);
    const want = m.reactions.filter((r) => r.count > 0n).map((r) => `${r.emoji} ${r.count}${r.emoji === mine ? "*" : ""}`);
    const key = want.join("|");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren();
    for (const r of m.reactions) {
      if (r.count === 0n) continue;
      const b = el("button", r.emoji === mine ? "reaction mine" : "reaction");
      b.append(el("span", "emoji", r.emoji), ` ${r.count}`);
      b.type = "button";
      b.dataset.emoji = r.emoji;
      b.addEventListener("click", (ev) => {
        ev.stopPropagation();
        const cur = info.messages.get(m.id) ?? m;
        this.onReact?.(cur, r.emoji);
      });
      box.append(b);
    }
  }

  private renderMedia(box: HTMLElement, m: Message, info: ChatInfo): void {
    const media = m.media;
    const key = media?.file ? `${media.kind}:${media.file.id}` : "";
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren();
    box.hidden = !media?.file;
    if (!media?.file) return;
    const file = media.file;
    const ref = { file, chatId: info.chat.id, messageId: m.id };
    if (media.kind === MediaKind.MEDIA_PHOTO) {
      const img = el("img", "photo");
      img.alt = "Photo";
      const thumb = file.thumbs.find((t) => t.kind === "m") ?? file.thumbs.find((t) => t.kind === "s");
      if (thumb) {
        img.width = thumb.width;
        img.height = thumb.height;
      }
      img.addEventListener("click", () => this.onPhoto?.(info.messages.get(m.id) ?? m));
      box.append(img);
      const which = thumb ? thumb.kind : "";
      void this.previews
        .get(`${file.id}:${which}`, () => download(this.s, ref, which))
        .then((url) => (img.src = url))
        .catch(() => img.classList.add("broken"));
    } else if (media.kind === MediaKind.MEDIA_VOICE) {
      const play = el("button", "voice", `▶ Voice message · ${duration(media.durationSecs)}`);
      play.type = "button";
      play.addEventListener("click", async () => {
        play.disabled = true;
        try {
          const url = await this.previews.get(`${file.id}:voice`, () => download(this.s, ref));
          const audio = el("audio");
          audio.controls = true;
          audio.src = url;
          play.replaceWith(audio);
          void audio.play().catch(() => {});
        } catch {
          play.disabled = false;
          play.textContent = "▶ Voice message (failed, try again)";
        }
      });
      box.append(play);
    } else {
      const b = el("button", "file");
      b.type = "button";
      b.title = "Download";
      b.append(el("span", "icon", "📄"), el("span", "name", file.name || "file"), el("span", "size", humanSize(file.size)));
      b.addEventListener("click", () => this.onFile?.(info.messages.get(m.id) ?? m));
      box.append(b);
    }
  }

  private outboxEl(key: string, item: OutboxItem): HTMLElement {
    let e = this.messageEls.get(key);
    if (!e) {
      // Not `.message`: it has no id yet; the reply replaces it.
      e = el("div", "pending-message own");
      e.dataset.randomId = String(item.randomId);
      const meta = el("div", "meta");
      meta.append(el("span", "state"));
      e.append(meta);
      if (item.file) {
        const f = item.file;
        const up = el("div", "upload");
        up.append(el("span", "name", f.name), el("progress", "progress"), el("span", "pct"));
        const cancel = el("button", "cancel link", "Cancel");
        cancel.type = "button";
        cancel.addEventListener("click", (ev) => {
          ev.stopPropagation();
          this.onCancel?.(item);
        });
        up.append(cancel);
        e.append(up);
      }
      e.append(el("div", "text", item.text));
      e.addEventListener("click", () => {
        if (item.state === "failed") this.onRetry?.(item);
      });
      this.messageEls.set(key, e);
    }
    e.dataset.state = item.state;
    if (item.file) {
      const f = item.file;
      const bar = e.querySelector("progress") as HTMLProgressElement;
      bar.max = Math.max(1, f.total);
      const sent = sentBytes(f);
      bar.value = sent;
      setText(e.querySelector(".pct") as HTMLElement, `${Math.floor((100 * sent) / Math.max(1, f.total))}% of ${humanSize(f.total)}`);
    }
    const offline = this.s.state !== "online";
    setText(
      e.querySelector(".state") as HTMLElement,
      item.state === "failed"
        ? `not sent (${item.error ?? "error"}) — click to retry`
        : item.file && item.file.fileId === 0n
          ? offline ? "waiting for the connection…" : "uploading…"
          : offline ? "waiting for the connection…" : "sending…",
    );
    e.classList.toggle("failed", item.state === "failed");
    return e;
  }
}

/** Sets an element's text only when it changed: a render touches every
 * bubble of the open chat, and an unchanged write still costs the browser
 * style and layout work for the whole list. */
export function setText(e: HTMLElement, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}
