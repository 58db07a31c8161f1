// Wiring: load /web.json, start the session's connect loop, hook the DOM
// controls (login form, dialogs, composer, popups, keys) to session actions.

import { ChatKind } from "./gen/client_pb";
import { Session, type WebConfig } from "./session";
import { $, el, preview, Ui } from "./ui";
import { Composer } from "./composer";
import { errorText, Panels } from "./panels";

declare global {
  interface Window {
    courierDebug: { nodeId(): number | null; state(): string; heap(): number | null; uploads(): unknown[] };
  }
}

function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  return $(id) as T;
}

async function loadConfig(): Promise<WebConfig> {
  // Relative URL: works whether the page is served at / or under a prefix.
  for (let i = 0; ; i++) {
    try {
      const r = await fetch("web.json", { cache: "no-store" });
      if (r.ok) return (await r.json()) as WebConfig;
    } catch {
      /* retry below */
    }
    byId("status").textContent = "connecting…";
    await new Promise((r) => setTimeout(r, Math.min(3000, 300 * (i + 1))));
  }
}

async function start(): Promise<void> {
  const config = await loadConfig();
  const session = new Session(config);
  const ui = new Ui(session);

  const chatError = byId("chat-error");
  let errorTimer: ReturnType<typeof setTimeout> | undefined;
  const showError = (e: unknown) => {
    chatError.textContent = errorText(e);
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => (chatError.textContent = ""), 6000);
  };
  const composer = new Composer(session, showError);
  const panels = new Panels(session, ui, composer, showError);
  session.onChange = () => {
    ui.schedule();
    panels.refresh();
  };

  window.courierDebug = {
    nodeId: () => session.nodeId,
    state: () => session.state,
    // Chromium only: the soak bench reads the JS heap through it.
    uploads: () => session.uploadStats,
    heap: () => (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? null,
  };

  // ---- login
  const phone = byId<HTMLInputElement>("phone");
  const code = byId<HTMLInputElement>("code");
  const first = byId<HTMLInputElement>("first-name");
  const last = byId<HTMLInputElement>("last-name");
  const sendCodeBtn = byId<HTMLButtonElement>("send-code");
  const signInBtn = byId<HTMLButtonElement>("sign-in");
  const signUpBtn = byId<HTMLButtonElement>("sign-up");
  const stepCode = byId("step-code");
  const stepName = byId("step-name");
  const loginError = byId("login-error");
  let phoneCodeHash = "";
  let loginPhone = "";

  const busy = async (btn: HTMLButtonElement, f: () => Promise<void>) => {
    if (btn.disabled) return;
    btn.disabled = true;
    loginError.textContent = "";
    try {
      await f();
    } catch (e) {
      loginError.textContent = errorText(e);
    } finally {
      btn.disabled = false;
    }
  };
  const resetLogin = () => {
    stepCode.hidden = true;
    stepName.hidden = true;
    code.value = "";
    phoneCodeHash = "";
    loginError.textContent = "";
  };
  session.onLoggedOut = () => {
    resetLogin();
    panels.closeAll();
  };

  sendCodeBtn.addEventListener("click", () =>
    busy(sendCodeBtn, async () => {
      loginPhone = phone.value.replace(/[\s()-]/g, "");
      phoneCodeHash = await session.sendCode(loginPhone);
      stepCode.hidden = false;
      stepName.hidden = true;
      code.focus();
    }),
  );
  phone.addEventListener("keydown", (e) => e.key === "Enter" && sendCodeBtn.click());
  signInBtn.addEventListener("click", () =>
    busy(signInBtn, async () => {
      session.loggedOutReason = "";
      const ok = await session.signIn(loginPhone, phoneCodeHash, code.value.trim());
      if (!ok) {
        // SIGN_UP_REQUIRED: the same code goes to sign_up with a name.
        stepName.hidden = false;
        first.focus();
      } else {
        resetLogin();
      }
    }),
  );
  code.addEventListener("keydown", (e) => e.key === "Enter" && signInBtn.click());
  signUpBtn.addEventListener("click", () =>
    busy(signUpBtn, async () => {
      await session.signUp(loginPhone, phoneCodeHash, first.value.trim(), last.value.trim());
      resetLogin();
    }),
  );
  last.addEventListener("keydown", (e) => e.key === "Enter" && signUpBtn.click());
  byId<HTMLButtonElement>("log-out").addEventListener("click", () => void session.logOut());
  byId<HTMLButtonElement>("account-open").addEventListener("click", () => void panels.openAccount());

  // ---- dialogs, new chats
  const open = (chatId: bigint) => {
    closeSearch();
    session.openChat(chatId).catch(showError);
    composer.chatChanged();
    refreshPresence();
    composer.focus();
  };
  ui.onOpen = open;
  ui.onRetry = (item) => session.retry(item);
  ui.onCancel = (item) => session.cancel(item);
  ui.onMenu = (m, anchor) => panels.openMenu(m, anchor);
  ui.onReact = (m, emoji) => {
    if (session.openChatId !== null) void session.react(session.openChatId, m.id, emoji).catch(showError);
  };
  ui.onPhoto = (m) => void panels.openPhoto(m);
  ui.onFile = (m) => void panels.downloadFile(m);
  ui.onQuote = (chatId, id) => void jumpTo(chatId, id);
  ui.onNeedOlder = (chatId) => void session.loadOlder(chatId).catch(() => {});

  const newChatPhone = byId<HTMLInputElement>("new-chat-phone");
  const newChatBtn = byId<HTMLButtonElement>("new-chat");
  newChatBtn.addEventListener("click", async () => {
    const p = newChatPhone.value.replace(/[\s()-]/g, "");
    if (!p || newChatBtn.disabled) return;
    newChatBtn.disabled = true;
    try {
      await session.startPrivateChat(p);
      newChatPhone.value = "";
      composer.chatChanged();
      refreshPresence();
      composer.focus();
    } catch (e) {
      showError(e);
    } finally {
      newChatBtn.disabled = false;
    }
  });
  newChatPhone.addEventListener("keydown", (e) => e.key === "Enter" && newChatBtn.click());
  byId("new-group").addEventListener("click", () => panels.openCreate(ChatKind.GROUP));
  byId("new-channel").addEventListener("click", () => panels.openCreate(ChatKind.CHANNEL));
  const closeChat = () => {
    session.openChatId = null;
    closeSearch();
    ui.schedule();
  };
  byId("back").addEventListener("click", closeChat);
  byId("chat-head").addEventListener("click", () => void panels.openInfo());
  byId("info-open").addEventListener("click", () => void panels.openInfo());

  // ---- pinned bar
  byId("pinned-jump").addEventListener("click", () => {
    const id = session.openChatId;
    const info = id === null ? undefined : session.chats.get(id);
    if (info && id !== null && info.chat.pinned !== 0n) void jumpTo(id, info.chat.pinned);
  });
  byId("unpin").addEventListener("click", () => {
    const id = session.openChatId;
    if (id !== null) void session.pin(id, 0n).catch(showError);
  });

  /** Scrolls to a message (loading older pages until it is there) and flashes it. */
  const jumpTo = async (chatId: bigint, id: bigint) => {
    if (id === 0n) return;
    if (session.openChatId !== chatId) await session.openChat(chatId);
    const found = await session.loadUntil(chatId, id).catch(() => false);
    ui.render();
    const e = document.querySelector<HTMLElement>(`#messages .message[data-id="${id}"]`);
    if (!found || !e) return showError(new Error("That message is no longer here."));
    e.scrollIntoView({ block: "center" });
    e.classList.remove("flash");
    void e.offsetWidth;
    e.classList.add("flash");
  };

  // ---- search in the chat
  const searchBar = byId("search-bar");
  const searchInput = byId<HTMLInputElement>("search-input");
  const results = byId("search-results");
  const closeSearch = () => {
    searchBar.hidden = true;
    results.hidden = true;
    results.replaceChildren();
    searchInput.value = "";
  };
  byId("search-open").addEventListener("click", () => {
    searchBar.hidden = false;
    searchInput.focus();
  });
  byId("search-close").addEventListener("click", closeSearch);
  let searchSeq = 0;
  const runSearch = async () => {
    const chatId = session.openChatId;
    const text = searchInput.value.trim();
    if (chatId === null || !text) return;
    const seq = ++searchSeq;
    try {
      const found = await session.search(chatId, text);
      if (seq !== searchSeq) return;
      results.replaceChildren();
      if (found.length === 0) results.append(el("li", "none", "Nothing found"));
      for (const m of found) {
        const li = el("li", "search-result");
        li.dataset.id = String(m.id);
        li.tabIndex = 0;
        li.append(el("span", "who", session.userName(m.from)), el("span", "what", preview(m)));
        const go = () => {
          results.hidden = true;
          void jumpTo(chatId, m.id);
        };
        li.addEventListener("click", go);
        li.addEventListener("keydown", (e) => e.key === "Enter" && go());
        results.append(li);
      }
      results.hidden = false;
    } catch (e) {
      showError(e);
    }
  };
  searchInput.addEventListener("keydown", (e) => e.key === "Enter" && void runSearch());

  // ---- keys: Esc closes the topmost thing (a popup, the search, a reply or
  // an edit, then the chat); the one place Esc is handled.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.isComposing) return;
    e.preventDefault();
    if (panels.closeTop()) return;
    if (!searchBar.hidden) {
      closeSearch();
      composer.focus();
    } else if (!composer.cancelMode() && session.openChatId !== null) {
      closeChat();
    }
  });

  // ---- presence: the open private chat's peer, every 30 s and on opening
  const refreshPresence = () => {
    const id = session.openChatId;
    const info = id === null ? undefined : session.chats.get(id);
    const peer = info ? session.peerOf(info) : undefined;
    if (peer !== undefined) session.refreshUsers([peer]);
  };
  setInterval(refreshPresence, 30_000);

  // ---- notifications while the tab is hidden (with permission)
  const offer = byId("notify-offer");
  const canNotify = typeof Notification !== "undefined";
  const updateOffer = () => (offer.hidden = !canNotify || Notification.permission !== "default");
  updateOffer();
  byId("notify-enable").addEventListener("click", () => void Notification.requestPermission().then(updateOffer, updateOffer));
  session.onIncoming = (info, m) => {
    if (!canNotify || Notification.permission !== "granted" || document.visibilityState === "visible") return;
    const title = info.chat.kind === ChatKind.PRIVATE ? session.userName(m.from) : session.chatTitle(info);
    const body = info.chat.kind === ChatKind.GROUP ? `${session.userName(m.from)}: ${preview(m)}` : preview(m);
    try {
      const n = new Notification(title, { body: body.slice(0, 200), tag: `chat-${info.chat.id}` });
      n.onclick = () => {
        window.focus();
        open(info.chat.id);
        n.close();
      };
    } catch {
      /* some browsers allow notifications only from a service worker */
    }
  };

  // ---- read marks: only while the page is visible
  const visibility = () => {
    session.chatVisible = document.visibilityState === "visible";
    session.maybeMarkRead();
  };
  document.addEventListener("visibilitychange", visibility);
  window.addEventListener("focus", visibility);
  visibility();

  ui.render();
  await session.run();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => void start());
else void start();
