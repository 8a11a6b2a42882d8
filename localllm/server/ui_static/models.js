// The models view: local models (/api/tags), pulling one with a progress bar (/api/pull), deleting one,
// and what is loaded (/api/ps) with a way to unload it.

import { ApiError, humanBytes, json, request, stream } from "./api.js";

const $ = (id) => document.getElementById(id);

let changed = () => {}; // told when the list of models changes (the chat view's picker follows)
let pulling = null; // the AbortController of the pull in progress

/** Wire the models view; `onChange` is called after a pull or a delete. */
export function init(onChange) {
  changed = onChange;
  $("pull-form").addEventListener("submit", (event) => {
    event.preventDefault();
    pull($("pull-name").value.trim());
  });
  $("pull-cancel").addEventListener("click", () => pulling?.abort());
  $("refresh-models").addEventListener("click", refresh);
  $("model-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-delete]");
    if (button) confirmDelete(button.dataset.delete);
  });
  $("loaded-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-unload]");
    if (button) unload(button.dataset.unload, button);
  });
}

/** Reload both lists. */
export async function refresh() {
  await Promise.all([listModels(), listLoaded()]);
}

function problem(err) {
  return err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
}

function setError(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

async function listModels() {
  let models;
  try {
    ({ models = [] } = await json("/api/tags"));
  } catch (err) {
    setError("models-error", problem(err));
    return;
  }
  setError("models-error", "");
  models.sort((a, b) => a.name.localeCompare(b.name));
  $("model-list").replaceChildren(...models.map(modelItem));
  $("models-empty").hidden = models.length > 0;
}

function detailsText(details = {}) {
  return [details.family, details.parameter_size, details.quantization_level, details.format].filter(Boolean).join(" · ");
}

// One model as a card: its name, a line of facts and one action button (data-<action>="name").
function card(model, facts, action, label, danger = false) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.model = model.name;
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = model.name;
  const line = document.createElement("div");
  line.className = "facts";
  line.textContent = facts.filter(Boolean).join(" · ");
  const button = document.createElement("button");
  button.type = "button";
  if (danger) button.className = "danger";
  button.dataset[action] = model.name;
  button.textContent = label;
  button.setAttribute("aria-label", `${label} ${model.name}`);
  li.append(name, line, button);
  return li;
}

function modelItem(model) {
  const modified = model.modified_at ? new Date(model.modified_at).toLocaleString() : "";
  const facts = [humanBytes(model.size), detailsText(model.details), modified && `modified ${modified}`];
  return card(model, facts, "delete", "Delete", true);
}

async function listLoaded() {
  let models;
  try {
    ({ models = [] } = await json("/api/ps"));
  } catch (err) {
    setError("models-error", problem(err));
    return;
  }
  $("loaded-list").replaceChildren(...models.map(loadedItem));
  $("loaded-empty").hidden = models.length > 0;
}

function loadedItem(model) {
  const processor = model.size_vram ? `${Math.round((100 * model.size_vram) / model.size)}% GPU` : "CPU";
  const until = new Date(model.expires_at);
  const untilText = until.getFullYear() > 2200 ? "kept loaded" : `until ${until.toLocaleTimeString()}`;
  return card(model, [humanBytes(model.size), processor, `context ${model.context_length}`, untilText], "unload", "Unload");
}

async function pull(name) {
  if (!name || pulling) return;
  const bar = $("pull-progress");
  const text = $("pull-text");
  // digest -> [completed, total], one map a stage: the downloads, then the check of their digests (the daemon
  // names those "verify-<digest>"), so the bar runs to 100% for each stage instead of falling back
  const stages = { download: new Map(), verify: new Map() };
  bar.value = 0;
  bar.hidden = false;
  text.textContent = `Pulling ${name}…`;
  setError("pull-error", "");
  pulling = new AbortController();
  $("pull-button").disabled = true;
  $("pull-cancel").hidden = false;
  try {
    for await (const step of stream("/api/pull", { model: name, stream: true }, pulling.signal)) {
      const totals = step.digest?.startsWith("verify-") ? stages.verify : stages.download;
      if (step.digest && step.total) totals.set(step.digest, [step.completed || 0, step.total]);
      let done = 0;
      let total = 0;
      for (const [c, t] of totals.values()) {
        done += c;
        total += t;
      }
      if (step.status === "success") {
        bar.value = 100;
        text.textContent = `${name}: done (100%)`;
      } else {
        if (total) bar.value = Math.min(100, Math.floor((100 * done) / total));
        const amount = total ? ` ${humanBytes(done)} of ${humanBytes(total)} (${bar.value}%)` : "";
        text.textContent = `${step.status}${amount}`;
      }
    }
    $("pull-name").value = "";
    changed();
    await refresh();
  } catch (err) {
    bar.hidden = true;
    text.textContent = "";
    if (err.name === "AbortError") setError("pull-error", `Pull of ${name} cancelled.`);
    else setError("pull-error", `Could not pull ${name}: ${problem(err)}`);
  } finally {
    pulling = null;
    $("pull-button").disabled = false;
    $("pull-cancel").hidden = true;
  }
}

function confirmDelete(name) {
  const dialog = $("confirm-delete");
  $("confirm-delete-name").textContent = name;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await request("/api/delete", { method: "DELETE", body: { model: name } });
    } catch (err) {
      setError("models-error", `Could not delete ${name}: ${problem(err)}`);
      return;
    }
    changed();
    await refresh();
  };
  dialog.showModal();
}

async function unload(name, button) {
  button.disabled = true;
  try {
    // What Ollama's clients send to unload: a generate request without a prompt and keep_alive 0.
    await request("/api/generate", { method: "POST", body: { model: name, keep_alive: 0, stream: false } });
  } catch (err) {
    setError("models-error", `Could not unload ${name}: ${problem(err)}`);
  }
  await listLoaded();
}
