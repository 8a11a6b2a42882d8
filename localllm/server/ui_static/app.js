// The page's entry point: the two views (#chat, #models), the API key dialog, and the sidebar on phones.

import { setKeyPrompt } from "./api.js";
import * as chat from "./chat.js";
import * as models from "./models.js";

const $ = (id) => document.getElementById(id);

/** Ask for an API key in the page's dialog; resolves to the key, or null when cancelled. */
function askForKey(reason) {
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason || "";
  $("key-input").value = "";
  return new Promise((resolve) => {
    dialog.onclose = () => {
      const key = $("key-input").value.trim();
      resolve(dialog.returnValue === "ok" && key ? key : null);
    };
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function show(view) {
  const name = view === "models" ? "models" : "chat";
  $("chat-view").hidden = name !== "chat";
  $("models-view").hidden = name !== "models";
  $("sidebar-toggle").hidden = name !== "chat"; // the conversations belong to the chat view
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.classList.remove("sidebar-open");
  if (name === "models") models.refresh();
  else $("message").focus();
}

async function main() {
  setKeyPrompt(askForKey);
  $("sidebar-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    $("sidebar-toggle").setAttribute("aria-expanded", String(open));
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  models.init(() => chat.refreshModels());
  await chat.init();
  show(location.hash.slice(1));
  document.body.classList.add("ready"); // tests wait for this: the model list is in place
}

main();
