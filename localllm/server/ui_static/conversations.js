// Conversations kept in the browser (localStorage), newest first.
//
// localStorage["localllm.conversations"] = [
//   {id, title, model, system, options: {temperature, num_ctx, num_predict},
//    messages: [{role: "user" | "assistant", content, images?, thinking?, error?, stopped?}], updated}, ...]
//    (images: base64 strings, as Ollama's `images`; a conversation too big for the browser's storage lives on in
//    the page until it is reloaded)
// localStorage["localllm.current"] = the id of the conversation on screen

const LIST = "localllm.conversations";
const CURRENT = "localllm.current";

function load() {
  try {
    const list = JSON.parse(localStorage.getItem(LIST) || "[]");
    return Array.isArray(list) ? list.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages)) : [];
  } catch {
    return [];
  }
}

/** All conversations, most recently changed first. */
export function all() {
  return load().sort((a, b) => (b.updated || 0) - (a.updated || 0));
}

/** A new, empty conversation that takes the model, system prompt and options of `like` (not saved yet). */
export function create(like) {
  return {
    id: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`,
    title: "",
    model: like?.model || "",
    system: like?.system || "",
    options: { ...(like?.options || {}) },
    messages: [],
    updated: Date.now(),
  };
}

/** Store `conversation` (replacing the one with its id) and make it the current one. */
export function save(conversation) {
  conversation.updated = Date.now();
  if (!conversation.title) {
    const first = conversation.messages.find((m) => m.role === "user");
    if (first) conversation.title = first.content.trim().replace(/\s+/g, " ").slice(0, 60) || (first.images ? "Image" : "");
  }
  const list = load().filter((c) => c.id !== conversation.id);
  list.push(conversation);
  try {
    localStorage.setItem(LIST, JSON.stringify(list));
  } catch {
    // storage full or disabled: the conversation lives on in the page until it is reloaded
  }
  setCurrent(conversation.id);
}

/** Forget a conversation. */
export function remove(id) {
  localStorage.setItem(LIST, JSON.stringify(load().filter((c) => c.id !== id)));
  if (localStorage.getItem(CURRENT) === id) localStorage.removeItem(CURRENT);
}

/** The conversation last on screen, if it is still stored. */
export function current() {
  const id = localStorage.getItem(CURRENT);
  return load().find((c) => c.id === id) || null;
}

export function setCurrent(id) {
  try {
    localStorage.setItem(CURRENT, id);
  } catch {
    // as in save()
  }
}
