// The composer: text, reply and edit modes, attachments (the file input, drag
// and drop), voice notes, and the keys (Enter sends, Shift+Enter is a new
// line, Up in an empty composer edits my last message; Esc, in main.ts,
// cancels a reply or an edit).

import { MediaKind, type Message } from "./gen/client_pb";
import { MAX_CAPTION, MAX_TEXT, type Session } from "./session";
import { kindOf, MAX_FILE, TOO_BIG } from "./media";
import { $, preview, setText } from "./ui";

type Mode = { kind: "reply"; chatId: bigint; message: Message } | { kind: "edit"; chatId: bigint; message: Message } | null;

export class Composer {
  private readonly box = $("composer") as HTMLTextAreaElement;
  private readonly context = $("compose-context");
  private readonly attach = $("attach") as HTMLInputElement;
  private readonly record = $("record") as HTMLButtonElement;
  private mode: Mode = null;
  private recorder: MediaRecorder | null = null;

  constructor(
    private readonly s: Session,
    private readonly showError: (e: unknown) => void,
  ) {
    this.box.addEventListener("keydown", (e) => this.onKey(e));
    this.box.addEventListener("input", () => {
      this.autosize();
      if (this.s.openChatId !== null && this.box.value.trim() !== "" && this.mode?.kind !== "edit") this.s.typing(this.s.openChatId);
    });
    $("send").addEventListener("click", () => this.submit());
    $("context-cancel").addEventListener("click", () => this.cancelMode());
    this.attach.addEventListener("change", () => {
      const files = [...(this.attach.files ?? [])];
      this.attach.value = "";
      this.sendFiles(files);
    });
    this.record.addEventListener("click", () => void this.toggleRecording());
    // Drag and drop anywhere on the chat pane.
    const pane = $("chat");
    let depth = 0;
    pane.addEventListener("dragenter", (e) => {
      if (!e.dataTransfer?.types.includes("Files")) return;
      depth++;
      pane.classList.add("dropping");
    });
    pane.addEventListener("dragleave", () => {
      if (--depth <= 0) {
        depth = 0;
        pane.classList.remove("dropping");
      }
    });
    pane.addEventListener("dragover", (e) => {
      if (e.dataTransfer?.types.includes("Files")) e.preventDefault();
    });
    pane.addEventListener("drop", (e) => {
      depth = 0;
      pane.classList.remove("dropping");
      const files = [...(e.dataTransfer?.files ?? [])];
      if (files.length === 0) return;
      e.preventDefault();
      this.sendFiles(files);
    });
  }

  focus(): void {
    this.box.focus();
  }

  /** A new chat was opened: reply and edit belong to the old one. */
  chatChanged(): void {
    if (this.mode && this.mode.chatId !== this.s.openChatId) this.cancelMode();
  }

  reply(chatId: bigint, m: Message): void {
    this.mode = { kind: "reply", chatId, message: m };
    this.showContext("Reply to", this.s.userName(m.from), preview(m));
    this.box.focus();
  }

  edit(chatId: bigint, m: Message): void {
    this.mode = { kind: "edit", chatId, message: m };
    this.showContext("Edit", "", preview(m));
    this.box.value = m.text;
    this.autosize();
    this.box.focus();
    this.box.setSelectionRange(this.box.value.length, this.box.value.length);
  }

  /** Cancels a reply or an edit; answers whether there was one. */
  cancelMode(): boolean {
    if (!this.mode) return false;
    if (this.mode.kind === "edit") this.box.value = "";
    this.mode = null;
    this.context.hidden = true;
    this.autosize();
    return true;
  }

  private showContext(kind: string, who: string, what: string): void {
    setText(this.context.querySelector(".what-kind") as HTMLElement, kind);
    setText(this.context.querySelector(".who") as HTMLElement, who);
    setText(this.context.querySelector(".what") as HTMLElement, what);
    this.context.dataset.mode = this.mode?.kind ?? "";
    this.context.hidden = false;
  }

  private autosize(): void {
    this.box.style.height = "auto";
    this.box.style.height = `${Math.min(160, this.box.scrollHeight + 2)}px`;
  }

  private onKey(e: KeyboardEvent): void {
    if (e.isComposing) return;
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      this.submit();
    } else if (e.key === "ArrowUp" && this.box.value === "" && !this.mode) {
      const m = this.lastOwn();
      if (m && this.s.openChatId !== null) {
        e.preventDefault();
        this.edit(this.s.openChatId, m);
      }
    }
  }

  /** My newest message in the open chat that can still be edited (text, not a forward). */
  private lastOwn(): Message | undefined {
    const id = this.s.openChatId;
    const info = id === null ? undefined : this.s.chats.get(id);
    if (!info || !this.s.me) return undefined;
    let best: Message | undefined;
    for (const m of info.messages.values()) {
      if (m.from === this.s.me.id && !m.fwd && (!best || m.id > best.id)) best = m;
    }
    return best;
  }

  private submit(): void {
    const text = this.box.value.trim();
    const chatId = this.s.openChatId;
    if (chatId === null) return;
    const mode = this.mode;
    if (mode?.kind === "edit") {
      if (text === "" || text === mode.message.text) {
        this.cancelMode();
        return;
      }
      if (text.length > MAX_TEXT) return this.showError(new Error(`A message is at most ${MAX_TEXT} characters.`));
      this.cancelMode();
      this.box.value = "";
      void this.s.editMessage(mode.chatId, mode.message.id, text).catch(this.showError);
      return;
    }
    if (!text) return;
    if (text.length > MAX_TEXT) return this.showError(new Error(`A message is at most ${MAX_TEXT} characters.`));
    const replyTo = mode?.kind === "reply" && mode.chatId === chatId ? mode.message.id : 0n;
    this.box.value = "";
    this.cancelMode();
    this.autosize();
    this.s.send(chatId, text, replyTo);
  }

  /** Each file goes as its own message: a photo (JPEG, PNG, GIF, WebP) or
   * a file; the composer's text becomes the first one's caption. */
  sendFiles(files: File[]): void {
    const chatId = this.s.openChatId;
    if (chatId === null || files.length === 0) return;
    const info = this.s.chats.get(chatId);
    if (!info || !this.s.canPost(info)) return;
    let caption = this.box.value.trim();
    if (caption.length > MAX_CAPTION) return this.showError(new Error(`A caption is at most ${MAX_CAPTION} characters.`));
    const replyTo = this.mode?.kind === "reply" ? this.mode.message.id : 0n;
    for (const f of files) {
      if (f.size === 0) {
        this.showError(new Error(`${f.name} is empty.`));
        continue;
      }
      if (f.size > MAX_FILE) {
        this.showError(new Error(`${f.name} is too big (${TOO_BIG}).`));
        continue;
      }
      this.s.sendFile(chatId, f, f.name, kindOf(f.type), caption, replyTo);
      caption = "";
    }
    this.box.value = "";
    this.cancelMode();
  }

  /** Records a voice note with the microphone (MediaRecorder); a second click sends it. */
  private async toggleRecording(): Promise<void> {
    if (this.recorder) {
      this.recorder.stop();
      return;
    }
    const chatId = this.s.openChatId;
    if (chatId === null) return;
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      this.showError(new Error("No microphone (or no permission to use it)."));
      return;
    }
    const chunks: Blob[] = [];
    const rec = new MediaRecorder(stream);
    const started = Date.now();
    this.recorder = rec;
    this.record.classList.add("recording");
    this.record.title = "Stop and send the voice note";
    rec.ondataavailable = (e) => e.data.size > 0 && chunks.push(e.data);
    rec.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      this.recorder = null;
      this.record.classList.remove("recording");
      this.record.title = "Record a voice note";
      const secs = Math.max(1, Math.round((Date.now() - started) / 1000));
      const blob = new Blob(chunks, { type: rec.mimeType || "audio/webm" });
      if (blob.size > 0) this.s.sendFile(chatId, blob, `voice-${new Date().toISOString().slice(0, 19)}.webm`, MediaKind.MEDIA_VOICE, "", 0n, secs);
    };
    rec.start(250);
  }
}
