// Wiring: load /web.json, start the session's connect loop, hook the DOM
// controls (login form, new chat, dialog clicks, composer) to session actions.

import { CourierError } from "./wire";
import { Session, type WebConfig } from "./session";
import { Ui } from "./ui";

declare global {
  interface Window {
    courierDebug: { nodeId(): number | null; state(): string };
  }
}

function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} missing`);
  return e as T;
}

function errText(e: unknown): string {
  if (e instanceof CourierError) {
    switch (e.code) {
      case "PHONE_NUMBER_INVALID":
        return "That phone number is not valid.";
      case "PHONE_CODE_INVALID":
        return `Wrong code. ${e.message}`;
      case "PHONE_CODE_EXPIRED":
        return "The code expired: ask for a new one.";
      case "FLOOD_WAIT":
        return `Too many attempts: wait ${e.retryAfterSecs || "a few"} seconds.`;
      case "CONNECTION_LOST":
      case "TIMEOUT":
      case "UNAVAILABLE":
        return "No connection right now: try again in a moment.";
      default:
        return e.message;
    }
  }
  return String((e as Error)?.message ?? e);
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
  session.onChange = () => ui.schedule();

  window.courierDebug = {
    nodeId: () => session.nodeId,
    state: () => session.state,
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
      loginError.textContent = errText(e);
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
  session.onLoggedOut = resetLogin;

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

  // ---- dialogs and new chat
  const chatError = byId("chat-error");
  const showError = (e: unknown) => {
    chatError.textContent = errText(e);
    setTimeout(() => (chatError.textContent = ""), 5000);
  };
  ui.onOpen = (chatId) => {
    session.openChat(chatId).catch(showError);
    composer.focus();
  };
  ui.onRetry = (item) => session.retry(item);
  const newChatPhone = byId<HTMLInputElement>("new-chat-phone");
  const newChatBtn = byId<HTMLButtonElement>("new-chat");
  newChatBtn.addEventListener("click", async () => {
    const p = newChatPhone.value.replace(/[\s()-]/g, "");
    if (!p || newChatBtn.disabled) return;
    newChatBtn.disabled = true;
    try {
      await session.startPrivateChat(p);
      newChatPhone.value = "";
      composer.focus();
    } catch (e) {
      if (e instanceof CourierError && e.code === "BAD_REQUEST") chatError.textContent = "No account with that phone.";
      else showError(e);
    } finally {
      newChatBtn.disabled = false;
    }
  });
  newChatPhone.addEventListener("keydown", (e) => e.key === "Enter" && newChatBtn.click());
  byId("back").addEventListener("click", () => {
    session.openChatId = null;
    ui.schedule();
  });

  // ---- composer: Enter sends, Shift+Enter is a newline
  const composer = byId<HTMLTextAreaElement>("composer");
  const sendBtn = byId<HTMLButtonElement>("send");
  const send = () => {
    const text = composer.value.trim();
    const chatId = session.openChatId;
    if (!text || chatId === null) return;
    composer.value = "";
    session.send(chatId, text);
  };
  composer.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  composer.addEventListener("input", () => {
    if (session.openChatId !== null && composer.value.trim() !== "") session.typing(session.openChatId);
  });
  sendBtn.addEventListener("click", send);

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
