// Images in the chat: attached with the Attach button (a file picker), pasted or dropped into the composer,
// shown as thumbnails there and in the conversation, and sent as Ollama's `images` (base64, no `data:` prefix).
// Thumbnails are `data:` URLs (the page's Content-Security-Policy allows images from itself and `data:` only).

const $ = (id) => document.getElementById(id);

let pending = []; // [{name, data}]: the images waiting in the composer, in the order they were added
let notify = () => {};

/** Wire the composer: the Attach button and its file input, pasting and dropping; `onError(text)` says what failed. */
export function init(onError) {
  notify = onError;
  $("attach").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", async () => {
    await add([...$("attach-input").files]);
    $("attach-input").value = ""; // the same file may be picked again
  });
  $("message").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter(isImage);
    if (!files.length) return; // text: pasted as usual
    event.preventDefault();
    add(files);
  });
  const composer = $("composer");
  composer.addEventListener("dragover", (event) => {
    if ([...(event.dataTransfer?.items || [])].some((item) => item.kind === "file")) event.preventDefault();
  });
  composer.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files.length) return;
    event.preventDefault();
    add([...event.dataTransfer.files]);
  });
  $("attachments").addEventListener("click", (event) => {
    const button = event.target.closest("button.remove");
    if (!button) return;
    pending.splice(Number(button.dataset.index), 1);
    draw();
    $("message").focus();
  });
}

/** How many images wait in the composer. */
export function count() {
  return pending.length;
}

/** The images waiting in the composer, as base64; the composer is emptied. */
export function take() {
  const taken = pending.map((image) => image.data);
  pending = [];
  draw();
  return taken;
}

/** The thumbnails of a message's images (base64 strings), for the conversation. */
export function gallery(images) {
  const el = document.createElement("div");
  el.className = "images";
  images.forEach((data, i) => {
    const img = thumbnail(data);
    img.alt = `Image ${i + 1}`;
    el.append(img);
  });
  return el;
}

async function add(files) {
  for (const file of files) {
    if (!isImage(file)) {
      notify(`${file.name || "That file"} is not an image: attach PNG, JPEG, WebP, GIF or BMP files.`);
      continue;
    }
    try {
      pending.push({ name: file.name || "pasted image", data: await base64(file) });
    } catch {
      notify(`${file.name || "The image"} could not be read.`);
    }
  }
  draw();
}

function draw() {
  const strip = $("attachments");
  strip.replaceChildren(
    ...pending.map((image, i) => {
      const figure = document.createElement("figure");
      figure.className = "attached";
      const img = thumbnail(image.data);
      img.alt = image.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.dataset.index = String(i);
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${image.name}`);
      figure.append(img, remove);
      return figure;
    }),
  );
  strip.hidden = pending.length === 0;
}

function thumbnail(data) {
  const img = document.createElement("img");
  img.className = "thumb";
  img.src = `data:${typeOf(data)};base64,${data}`;
  return img;
}

function isImage(file) {
  return file.type.startsWith("image/");
}

/** The file's bytes as base64 (what a `data:` URL holds after its comma). */
function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** The image type its first bytes say (a stored message keeps only the base64). */
function typeOf(data) {
  if (data.startsWith("iVBORw0KGgo")) return "image/png";
  if (data.startsWith("/9j/")) return "image/jpeg";
  if (data.startsWith("R0lGOD")) return "image/gif";
  if (data.startsWith("Qk")) return "image/bmp";
  if (data.startsWith("UklGR")) return "image/webp";
  return "application/octet-stream";
}
