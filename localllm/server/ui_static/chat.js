// The chat view: pick a model, send messages (with images: images.js) through /api/chat, watch the answer
// stream in, stop it.

import { ApiError, json, stream } from "./api.js";
import * as conversations from "./conversations.js";
import * as images from "./images.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const OPTION_FIELDS = ["temperature", "num_ctx", "num_predict"];

let conversation = null; // the one on screen
let controller = null; // aborts the answer being streamed
let modelNames = [];

/** Wire the chat view's controls; `onModelsChanged` is called by the models view after a pull or delete. */
export function init() {
  conversation = conversations.current() || conversations.create(conversations.all()[0]);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", () => controller?.abort());
  images.init(showNotice);
  $("new-chat").addEventListener("click", () => {
    if (controller) return;
    open(conversations.create(conversation));
    $("message").focus();
  });
  $("model").addEventListener("change", () => {
    conversation.model = $("model").value;
    if (conversation.messages.length) conversations.save(conversation);
  });
  $("system").addEventListener("change", () => {
    conversation.system = $("system").value;
    if (conversation.messages.length) conversations.save(conversation);
  });
  for (const name of OPTION_FIELDS) {
    $(name).addEventListener("change", () => {
      const value = $(name).value.trim();
      if (value === "") delete conversation.options[name];
      else conversation.options[name] = Number(value);
      if (conversation.messages.length) conversations.save(conversation);
    });
  }
  $("settings-toggle").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("settings-toggle").setAttribute("aria-expanded", String(open));
  });
  $("messages").addEventListener("click", copyCode);
  $("conversations").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-id]");
    if (!button || controller) return;
    if (button.classList.contains("forget")) {
      conversations.remove(button.dataset.id);
      if (button.dataset.id === conversation.id) open(conversations.create(conversation));
      else listConversations();
      return;
    }
    const chosen = conversations.all().find((c) => c.id === button.dataset.id);
    if (chosen) open(chosen);
    document.body.classList.remove("sidebar-open");
  });
  open(conversation);
  return refreshModels();
}

/** Fill the model picker from /api/tags, keeping the conversation's model when it is still there. */
export async function refreshModels() {
  const select = $("model");
  try {
    const { models = [] } = await json("/api/tags");
    modelNames = models.map((m) => m.name).sort();
    showNotice("");
  } catch (err) {
    showNotice(err instanceof ApiError ? err.message : String(err));
    return;
  }
  select.replaceChildren(...modelNames.map((name) => new Option(name, name)));
  if (conversation.model && !modelNames.includes(conversation.model)) {
    select.append(new Option(`${conversation.model} (not here any more)`, conversation.model));
  }
  select.disabled = select.options.length === 0;
  if (select.disabled) {
    select.append(new Option("no models: pull one in Models", ""));
    return;
  }
  select.value = conversation.model || modelNames[0];
  conversation.model = select.value;
}

function open(chosen) {
  conversation = chosen;
  conversations.setCurrent(chosen.id);
  if (chosen.model && [...$("model").options].some((o) => o.value === chosen.model)) $("model").value = chosen.model;
  else if ($("model").value) conversation.model = $("model").value;
  $("system").value = chosen.system || "";
  for (const name of OPTION_FIELDS) $(name).value = chosen.options?.[name] ?? "";
  const list = $("messages");
  list.replaceChildren(...chosen.messages.map(messageElement));
  $("empty").hidden = chosen.messages.length > 0;
  listConversations();
  list.scrollTop = list.scrollHeight;
}

function listConversations() {
  const items = conversations.all().map((c) => {
    const li = document.createElement("li");
    if (c.id === conversation.id) li.className = "current";
    const openButton = document.createElement("button");
    openButton.type = "button";
    openButton.className = "open";
    openButton.dataset.id = c.id;
    openButton.textContent = c.title || "New chat";
    const forget = document.createElement("button");
    forget.type = "button";
    forget.className = "forget";
    forget.dataset.id = c.id;
    forget.textContent = "×";
    forget.setAttribute("aria-label", `Delete conversation ${c.title || ""}`.trim());
    li.append(openButton, forget);
    return li;
  });
  $("conversations").replaceChildren(...items);
}

function messageElement(message) {
  const el = document.createElement("article");
  el.className = `message ${message.role}`;
  el.dataset.role = message.role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.role === "user" ? "You" : message.model || conversation.model || "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  el.append(who, body);
  fill(el, message);
  return el;
}

/** (Re)draw a message's body: thinking folded apart, the answer as Markdown, then any stop or error note. */
function fill(el, message) {
  const body = el.querySelector(".body");
  const parts = [];
  if (message.thinking) {
    const details = document.createElement("details");
    details.className = "thinking";
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const text = document.createElement("div");
    text.className = "thinking-text";
    text.textContent = message.thinking;
    details.append(summary, text);
    details.open = el.querySelector("details.thinking")?.open ?? false;
    parts.push(details);
  }
  if (message.role === "user") {
    if (message.images?.length) parts.push(images.gallery(message.images));
    const text = document.createElement("div");
    text.className = "plain";
    text.textContent = message.content;
    parts.push(text);
  } else {
    const text = document.createElement("div");
    text.className = "markdown";
    text.append(renderMarkdown(message.content));
    parts.push(text);
  }
  if (message.stopped) parts.push(note("Stopped.", "stopped"));
  if (message.truncated) parts.push(note("The answer reached the token limit (Max tokens or the context).", "stopped"));
  if (message.error) {
    const error = note(message.error, "error");
    error.setAttribute("role", "alert");
    parts.push(error);
  }
  body.replaceChildren(...parts);
}

function note(text, kind) {
  const el = document.createElement("p");
  el.className = `note ${kind}`;
  el.textContent = text;
  return el;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("new-chat").disabled = busy;
  document.body.classList.toggle("generating", busy);
}

async function send() {
  const text = $("message").value;
  if ((!text.trim() && !images.count()) || controller) return;
  const model = $("model").value;
  if (!model) {
    showNotice("Pick a model first (or pull one in Models).");
    return;
  }
  conversation.model = model;
  $("message").value = "";
  $("empty").hidden = true;
  const user = { role: "user", content: text };
  const attached = images.take();
  if (attached.length) user.images = attached;
  conversation.messages.push(user);
  $("messages").append(messageElement(user));
  const answer = { role: "assistant", content: "", model };
  conversation.messages.push(answer);
  const el = messageElement(answer);
  el.classList.add("streaming");
  $("messages").append(el);
  conversations.save(conversation);
  listConversations();
  scrollDown(true);

  controller = new AbortController();
  setBusy(true);
  const request = {
    model,
    messages: history(),
    stream: true,
    options: { ...conversation.options },
  };
  let frame = 0;
  const redraw = () => {
    frame = 0;
    const near = nearBottom();
    fill(el, answer);
    scrollDown(near);
  };
  try {
    for await (const chunk of stream("/api/chat", request, controller.signal)) {
      const piece = chunk.message || {};
      if (piece.content) answer.content += piece.content;
      if (piece.thinking) answer.thinking = (answer.thinking || "") + piece.thinking;
      if (chunk.done && chunk.done_reason === "length") answer.truncated = true;
      if (!frame) frame = requestAnimationFrame(redraw);
    }
  } catch (err) {
    if (err.name === "AbortError") answer.stopped = true;
    else answer.error = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  } finally {
    if (frame) cancelAnimationFrame(frame);
    controller = null;
    setBusy(false);
    el.classList.remove("streaming");
    fill(el, answer);
    conversations.save(conversation);
    scrollDown(nearBottom());
    $("message").focus();
  }
}

/**
 * The messages to send: the system prompt, then every turn with text or images, images included. A turn the
 * daemon refused (its answer is an error and nothing else: a model without vision, a prompt too long) is left
 * out, question and answer, so that it does not make every later turn fail too.
 */
function history() {
  const out = [];
  if ((conversation.system || "").trim()) out.push({ role: "system", content: conversation.system });
  const list = conversation.messages;
  list.forEach((m, i) => {
    const answer = list[i + 1];
    if (m.role === "user" && answer?.role === "assistant" && answer.error && !answer.content) return;
    if (!m.content && !m.images?.length) return;
    const item = { role: m.role, content: m.content };
    if (m.images?.length) item.images = m.images;
    out.push(item);
  });
  return out;
}

function nearBottom() {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function scrollDown(yes) {
  if (yes) $("messages").scrollTop = $("messages").scrollHeight;
}

async function copyCode(event) {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const code = button.closest(".code-block").querySelector("code").textContent;
  try {
    await navigator.clipboard.writeText(code);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
}

/** Show a message in words at the top of the page. */
export function showNotice(text) {
  const banner = $("notice");
  banner.textContent = text;
  banner.hidden = !text;
}
