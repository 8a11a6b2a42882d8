// Talking to the daemon: same origin, its Ollama API, the API key (when keys are on) and NDJSON streams.

const KEY = "localllm.apiKey"; // sessionStorage: forgotten when the browser tab closes

/** An error to show a person: `message` is already in words. */
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

let askForKey = async () => null; // set by the page: resolves to a key, or null when the person cancels

/** Tell the API how to ask the person for an API key (a dialog of the page). */
export function setKeyPrompt(prompt) {
  askForKey = prompt;
}

/** The URL of an API path, relative to the page (works behind a reverse proxy that adds a prefix). */
function url(path) {
  return new URL(`..${path}`, document.baseURI).href;
}

/**
 * Send a request to the daemon and return the Response once it is OK.
 *
 * A 401 asks for an API key (once: it is kept in sessionStorage) and sends the request again; any other
 * error status becomes an ApiError with the daemon's own message. `signal` aborts the request.
 */
export async function request(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError("Cannot reach the localllm daemon: it may be stopped or restarting. Try again in a moment.");
    }
    if (response.ok) return response;
    const message = await errorText(response);
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      const given = await askForKey(key ? `That key was refused (${message}).` : message);
      if (given) {
        sessionStorage.setItem(KEY, given);
        continue;
      }
    }
    throw new ApiError(message, response.status);
  }
}

/** GET or POST `path` and return its JSON body. */
export async function json(path, options) {
  const response = await request(path, options);
  return response.json();
}

/**
 * POST `body` to a streaming endpoint and yield each NDJSON line as an object.
 *
 * A line `{"error": ...}` (the daemon's way to fail after the stream began) is thrown as an ApiError.
 */
export async function* stream(path, body, signal) {
  const response = await request(path, { method: "POST", body, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new ApiError("The connection to the daemon was lost during the answer (was it restarted?).");
      }
      if (chunk.done) break;
      pending += chunk.value;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (line.trim()) yield parse(line);
      }
    }
    if (pending.trim()) yield parse(pending);
  } finally {
    reader.releaseLock();
  }
}

function parse(line) {
  const item = JSON.parse(line);
  if (item && typeof item.error === "string") throw new ApiError(item.error);
  return item;
}

async function errorText(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    const error = body.error;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText || "error"}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

/** Bytes in the units Ollama's CLI uses (decimal: KB, MB, GB). */
export function humanBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}
