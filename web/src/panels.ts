// Popups: the message menu, the modal sheet (forward, new group or channel,
// chat info with members, account with the session list) and the photo
// viewer. One is open at a time; Esc (main.ts) or a click outside closes it.

import { ChatKind, MediaKind, Role, type Message } from "./gen/client_pb";
import type { Session } from "./session";
import type { Composer } from "./composer";
import { download, saveAs } from "./media";
import { $, el, REACTIONS, setText, timeOf, type Ui } from "./ui";

type Pane = "forward" | "create" | "info" | "account";

export class Panels {
  private readonly menu = $("message-menu");
  private readonly modal = $("modal");
  private readonly viewer = $("viewer");
  private readonly modalError = $("modal-error");
  private menuFor: Message | null = null;
  private menuAnchor: { el: HTMLElement; own: boolean } | null = null;
  private pane: Pane | null = null;
  private createKind: ChatKind = ChatKind.GROUP;
  private forwardIds: { from: bigint; ids: bigint[] } | null = null;
  private viewerMessage: Message | null = null;
  private memberRows = new Map<bigint, HTMLElement>();

  constructor(
    private readonly s: Session,
    private readonly ui: Ui,
    private readonly composer: Composer,
    private readonly showError: (e: unknown) => void,
  ) {
    // ---- message menu
    const reacts = this.menu.querySelector(".reacts") as HTMLElement;
    for (const emoji of REACTIONS) {
      const b = el("button", "react", emoji);
      b.type = "button";
      b.dataset.emoji = emoji;
      b.addEventListener("click", () => this.menuAction(`react:${emoji}`));
      reacts.append(b);
    }
    for (const b of this.menu.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
      b.addEventListener("click", () => this.menuAction(b.dataset.action!));
    }
    document.addEventListener("mousedown", (e) => {
      if (!this.menu.hidden && !this.menu.contains(e.target as Node)) this.closeMenu();
    });
    window.addEventListener("resize", () => this.placeMenu());

    // ---- modal
    $("modal-close").addEventListener("click", () => this.closeModal());
    this.modal.addEventListener("mousedown", (e) => {
      if (e.target === this.modal) this.closeModal();
    });
    $("forward-filter").addEventListener("input", () => this.renderForward());
    $("create-submit").addEventListener("click", () => void this.create());
    $("create-phones").addEventListener("keydown", (e) => (e as KeyboardEvent).key === "Enter" && void this.create());
    $("rename").addEventListener("click", () => void this.rename());
    $("invite").addEventListener("click", () => void this.invite());
    $("invite-phone").addEventListener("keydown", (e) => (e as KeyboardEvent).key === "Enter" && void this.invite());
    $("leave").addEventListener("click", () => void this.leave());
    $("terminate-others").addEventListener("click", () =>
      void this.busy(async () => {
        await this.s.terminateOtherSessions();
        await this.renderSessions();
      }),
    );
    $("account-log-out").addEventListener("click", () => {
      this.closeModal();
      void this.s.logOut();
    });

    // ---- viewer
    $("viewer-close").addEventListener("click", () => this.closeViewer());
    this.viewer.addEventListener("click", (e) => {
      if (e.target === this.viewer) this.closeViewer();
    });
    $("viewer-download").addEventListener("click", () => {
      if (this.viewerMessage) void this.downloadFile(this.viewerMessage);
    });
  }

  /** Every popup closed (a log-out). */
  closeAll(): void {
    while (this.closeTop());
  }

  /** Closes the topmost popup; answers whether one was open. */
  closeTop(): boolean {
    if (!this.viewer.hidden) return this.closeViewer(), true;
    if (!this.menu.hidden) return this.closeMenu(), true;
    if (!this.modal.hidden) return this.closeModal(), true;
    return false;
  }

  // ---------------------------------------------------------------- menu

  openMenu(m: Message, anchor: HTMLElement): void {
    const chatId = this.s.openChatId;
    const info = chatId === null ? undefined : this.s.chats.get(chatId);
    if (!info) return;
    this.menuFor = m;
    const own = !!this.s.me && m.from === this.s.me.id;
    const admin = this.s.isAdmin(info);
    const isPrivate = info.chat.kind === ChatKind.PRIVATE;
    const show = (action: string, on: boolean) => {
      (this.menu.querySelector(`[data-action="${action}"]`) as HTMLElement).hidden = !on;
    };
    show("reply", this.s.canPost(info));
    show("edit", own && !m.fwd && (m.text !== "" || !!m.media));
    show("pin", isPrivate || admin);
    (this.menu.querySelector('[data-action="pin"]') as HTMLElement).textContent = info.chat.pinned === m.id ? "Unpin" : "Pin";
    show("copy", m.text !== "");
    show("download", !!m.media?.file);
    show("delete-all", own || admin);
    const mine = this.s.myReaction(info, m);
    for (const b of this.menu.querySelectorAll<HTMLElement>(".react")) b.classList.toggle("mine", b.dataset.emoji === mine);
    this.menu.hidden = false;
    this.menuAnchor = { el: anchor, own };
    this.placeMenu();
    (this.menu.querySelector("button:not([hidden])") as HTMLElement | null)?.focus();
  }

  /** Beside its bubble, inside the window (again when the window resizes). */
  private placeMenu(): void {
    if (this.menu.hidden || !this.menuAnchor) return;
    const { el: anchor, own } = this.menuAnchor;
    const r = anchor.getBoundingClientRect();
    const w = this.menu.offsetWidth;
    const h = this.menu.offsetHeight;
    const left = Math.max(8, Math.min(window.innerWidth - w - 8, own ? r.right - w : r.left));
    const top = r.bottom + h + 8 < window.innerHeight ? r.bottom + 4 : Math.max(8, r.top - h - 4);
    this.menu.style.left = `${left}px`;
    this.menu.style.top = `${top}px`;
  }

  closeMenu(): void {
    this.menu.hidden = true;
    this.menuFor = null;
    this.menuAnchor = null;
  }

  private menuAction(action: string): void {
    const m = this.menuFor;
    const chatId = this.s.openChatId;
    this.closeMenu();
    if (!m || chatId === null) return;
    const ids = [m.id];
    if (action.startsWith("react:")) {
      void this.s.react(chatId, m.id, action.slice(6)).catch(this.showError);
      return;
    }
    switch (action) {
      case "reply":
        this.composer.reply(chatId, m);
        break;
      case "edit":
        this.composer.edit(chatId, m);
        break;
      case "forward":
        this.forwardIds = { from: chatId, ids };
        this.openModal("forward", "Forward to…");
        this.renderForward();
        ($("forward-filter") as HTMLInputElement).focus();
        break;
      case "pin": {
        const info = this.s.chats.get(chatId);
        void this.s.pin(chatId, info?.chat.pinned === m.id ? 0n : m.id).catch(this.showError);
        break;
      }
      case "copy":
        void navigator.clipboard?.writeText(m.text).catch(() => {});
        break;
      case "download":
        void this.downloadFile(m);
        break;
      case "delete-me":
        void this.s.deleteMessages(chatId, ids, false).catch(this.showError);
        break;
      case "delete-all":
        if (confirm("Delete this message for everyone?")) void this.s.deleteMessages(chatId, ids, true).catch(this.showError);
        break;
    }
  }

  /** A file, saved under its name (never opened in the page's origin). */
  async downloadFile(m: Message): Promise<void> {
    const file = m.media?.file;
    if (!file) return;
    try {
      const blob = await download(this.s, { file, chatId: m.chatId, messageId: m.id });
      saveAs(blob, file.name || (m.media?.kind === MediaKind.MEDIA_PHOTO ? "photo.jpg" : "file"));
    } catch (e) {
      this.showError(e);
    }
  }

  // ---------------------------------------------------------------- viewer

  async openPhoto(m: Message): Promise<void> {
    const file = m.media?.file;
    if (!file) return;
    this.viewerMessage = m;
    const img = $("viewer-img") as HTMLImageElement;
    img.removeAttribute("src");
    setText($("viewer-caption"), m.text || file.name);
    this.viewer.hidden = false;
    try {
      const url = await this.ui.previews.get(`${file.id}:full`, () => download(this.s, { file, chatId: m.chatId, messageId: m.id }));
      if (this.viewerMessage === m) img.src = url;
    } catch (e) {
      this.showError(e);
    }
  }

  closeViewer(): void {
    this.viewer.hidden = true;
    this.viewerMessage = null;
  }

  // ---------------------------------------------------------------- modal

  private openModal(pane: Pane, title: string): void {
    this.pane = pane;
    setText($("modal-title"), title);
    setText(this.modalError, "");
    for (const p of ["forward", "create", "info", "account"] as Pane[]) $(`${p}-pane`).hidden = p !== pane;
    this.modal.hidden = false;
    this.modal.dataset.pane = pane;
  }

  closeModal(): void {
    this.modal.hidden = true;
    this.pane = null;
  }

  /** A button in the modal that runs `f` (see `busy`). */
  private action(cls: string, label: string, f: () => Promise<void>): HTMLButtonElement {
    const b = el("button", cls, label);
    b.type = "button";
    b.addEventListener("click", () => void this.busy(f));
    return b;
  }

  /** Runs a modal action; its error shows in the modal. */
  private async busy(f: () => Promise<void>): Promise<void> {
    setText(this.modalError, "");
    try {
      await f();
    } catch (e) {
      setText(this.modalError, errorText(e));
    }
  }

  private renderForward(): void {
    const list = $("forward-list");
    const filter = ($("forward-filter") as HTMLInputElement).value.trim().toLowerCase();
    list.replaceChildren();
    for (const info of this.s.chats.values()) {
      if (!this.s.canPost(info)) continue;
      const title = this.s.chatTitle(info);
      if (filter && !title.toLowerCase().includes(filter)) continue;
      const li = el("li", "forward-target", title);
      li.dataset.chatId = String(info.chat.id);
      li.tabIndex = 0;
      const go = () =>
        void this.busy(async () => {
          const f = this.forwardIds;
          if (!f) return;
          await this.s.forward(info.chat.id, f.from, f.ids);
          this.closeModal();
          await this.s.openChat(info.chat.id);
        });
      li.addEventListener("click", go);
      li.addEventListener("keydown", (e) => e.key === "Enter" && go());
      list.append(li);
    }
  }

  openCreate(kind: ChatKind): void {
    this.createKind = kind;
    this.openModal("create", kind === ChatKind.CHANNEL ? "New channel" : "New group");
    ($("create-title") as HTMLInputElement).value = "";
    ($("create-phones") as HTMLInputElement).value = "";
    ($("create-title") as HTMLInputElement).focus();
  }

  private async create(): Promise<void> {
    const title = ($("create-title") as HTMLInputElement).value.trim();
    const phones = ($("create-phones") as HTMLInputElement).value
      .split(/[,;\n]/)
      .map((p) => p.replace(/[\s()-]/g, ""))
      .filter(Boolean);
    if (!title) return setText(this.modalError, "Give it a name.");
    await this.busy(async () => {
      await this.s.createChat(this.createKind, title, phones);
      this.closeModal();
      this.composer.focus();
    });
  }

  // ---------------------------------------------------------------- chat info

  async openInfo(): Promise<void> {
    const id = this.s.openChatId;
    const info = id === null ? undefined : this.s.chats.get(id);
    if (!info || id === null) return;
    const kind = info.chat.kind;
    this.openModal("info", this.s.chatTitle(info));
    const admin = this.s.isAdmin(info);
    setText(
      $("info-kind"),
      kind === ChatKind.CHANNEL ? `Channel · ${info.chat.members} subscribers` : kind === ChatKind.GROUP ? `Group · ${info.chat.members} members` : "Private chat",
    );
    $("rename-row").hidden = kind === ChatKind.PRIVATE || !admin;
    ($("rename-input") as HTMLInputElement).value = info.chat.title;
    $("invite-row").hidden = kind === ChatKind.PRIVATE || (kind === ChatKind.CHANNEL && !admin);
    $("leave").hidden = kind === ChatKind.PRIVATE;
    setText($("leave"), kind === ChatKind.CHANNEL ? "Leave channel" : "Leave group");
    const canList = kind !== ChatKind.CHANNEL || admin;
    $("members-heading").hidden = !canList;
    $("members").replaceChildren();
    if (canList) await this.busy(() => this.renderMembers(id));
  }

  private async renderMembers(chatId: bigint): Promise<void> {
    const info = this.s.chats.get(chatId);
    if (!info) return;
    const members = await this.s.members(chatId);
    const list = $("members");
    list.replaceChildren();
    this.memberRows.clear();
    const meAdmin = this.s.isAdmin(info);
    const meCreator = info.role === Role.CREATOR;
    for (const m of members) {
      const li = el("li", "member");
      li.dataset.userId = String(m.userId);
      li.dataset.role = Role[m.role] ?? "MEMBER";
      const u = this.s.users.get(m.userId);
      const status = u ? (u.online ? "online" : "") : "";
      li.append(el("span", "name", this.s.userName(m.userId)), el("span", "role", roleLabel(m.role)), el("span", "presence", status));
      this.memberRows.set(m.userId, li);
      const isMe = !!this.s.me && m.userId === this.s.me.id;
      if (!isMe && meCreator && m.role !== Role.CREATOR) {
        const admin = m.role === Role.ADMIN;
        li.append(
          this.action(admin ? "remove-admin link" : "make-admin link", admin ? "Remove admin" : "Make admin", async () => {
            await this.s.setAdmin(chatId, m.userId, !admin);
            await this.renderMembers(chatId);
          }),
        );
      }
      if (!isMe && meAdmin && m.role === Role.MEMBER) {
        li.append(
          this.action("remove-member link danger-text", "Remove", async () => {
            await this.s.removeMember(chatId, m.userId);
            await this.renderMembers(chatId);
          }),
        );
      }
      list.append(li);
    }
    this.ui.schedule();
  }

  /** Called on every render: a member list on screen follows joins, leaves and role changes. */
  refresh(): void {
    if (this.pane !== "info" || this.modal.hidden) return;
    const id = this.s.openChatId;
    const info = id === null ? undefined : this.s.chats.get(id);
    if (!info || id === null) return this.closeModal();
    if (info.membersChanged) {
      info.membersChanged = false;
      void this.busy(() => this.renderMembers(id));
      return;
    }
    // Names arrive after the list (one get_users batch).
    for (const [user, li] of this.memberRows) {
      setText(li.querySelector(".name") as HTMLElement, this.s.userName(user));
      const u = this.s.users.get(user);
      setText(li.querySelector(".presence") as HTMLElement, u?.online ? "online" : "");
    }
  }

  private async rename(): Promise<void> {
    const id = this.s.openChatId;
    const title = ($("rename-input") as HTMLInputElement).value.trim();
    if (id === null || !title) return;
    await this.busy(async () => {
      await this.s.rename(id, title);
      setText($("modal-title"), title);
    });
  }

  private async invite(): Promise<void> {
    const id = this.s.openChatId;
    const input = $("invite-phone") as HTMLInputElement;
    const phone = input.value.replace(/[\s()-]/g, "");
    if (id === null || !phone) return;
    await this.busy(async () => {
      await this.s.invite(id, phone);
      input.value = "";
      await this.renderMembers(id);
    });
  }

  private async leave(): Promise<void> {
    const id = this.s.openChatId;
    if (id === null) return;
    await this.busy(async () => {
      await this.s.leave(id);
      this.closeModal();
    });
  }

  // ---------------------------------------------------------------- account

  async openAccount(): Promise<void> {
    this.openModal("account", "Settings");
    const me = this.s.me;
    setText($("account-me"), me ? `${this.s.userName(me.id)} · ${me.phone}` : "");
    await this.busy(() => this.renderSessions());
  }

  private async renderSessions(): Promise<void> {
    const sessions = await this.s.sessions();
    sessions.sort((a, b) => (a.current ? -1 : b.current ? 1 : Number(b.lastActiveMs - a.lastActiveMs)));
    const list = $("sessions");
    list.replaceChildren();
    for (const x of sessions) {
      const li = el("li", x.current ? "session current" : "session");
      li.dataset.sessionId = String(x.id);
      const what = el("div", "what");
      what.append(el("span", "device", x.device || "unknown device"), el("span", "app muted", x.appVersion));
      const where = el("div", "where muted", `node ${x.nodeId} · ${x.address || "address unknown"} · ${x.current ? "this device" : `active ${timeOf(x.lastActiveMs)}`}`);
      li.append(what, where);
      if (!x.current) {
        li.append(
          this.action("terminate link danger-text", "Terminate", async () => {
            await this.s.terminateSession(x.id);
            await this.renderSessions();
          }),
        );
      }
      list.append(li);
    }
    ($("terminate-others") as HTMLButtonElement).hidden = sessions.length < 2;
  }
}

function roleLabel(r: Role): string {
  return r === Role.CREATOR ? "owner" : r === Role.ADMIN ? "admin" : "";
}

export function errorText(e: unknown): string {
  const code = (e as { code?: string })?.code;
  switch (code) {
    case "PHONE_NUMBER_INVALID":
      return "That phone number is not valid.";
    case "PHONE_CODE_INVALID":
      return `Wrong code. ${(e as Error).message}`;
    case "PHONE_CODE_EXPIRED":
      return "The code expired: ask for a new one.";
    case "BAD_REQUEST":
      return String((e as Error).message).replace(/^BAD_REQUEST: /, "");
    case "ADMIN_REQUIRED":
      return "Only admins can do that.";
    case "NOT_A_MEMBER":
      return "You are not a member of that chat.";
    case "FLOOD_WAIT":
      return `Too many requests: wait ${(e as { retryAfterSecs?: number }).retryAfterSecs || "a few"} seconds.`;
    case "EDIT_TIME_EXPIRED":
      return "Messages can be edited for 48 hours.";
    case "MESSAGE_AUTHOR_REQUIRED":
      return "Only the author can edit a message.";
    case "USER_IS_BLOCKED":
      return "This person does not accept that from you.";
    case "CONNECTION_LOST":
    case "TIMEOUT":
    case "UNAVAILABLE":
      return "No connection right now: try again in a moment.";
    default:
      return String((e as Error)?.message ?? e);
  }
}
