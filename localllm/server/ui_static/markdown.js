// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// Model output is untrusted: every piece of it becomes a text node (createTextNode / textContent), so
// `<img onerror=...>` or `<script>` in an answer is shown as those characters and never becomes an
// element. What Markdown adds (paragraphs, fenced code blocks, inline code, bold, italics, headings and
// lists) is made here with createElement. No innerHTML anywhere.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

// Inline spans, first match wins: `code`, **bold**, __bold__, *italic*, _italic_.
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*]*?[^\s*]|[^\s*])\*|(?<![\w])_(?=[^\s_])([^_]*?[^\s_]|[^\s_])_(?![\w])/g;

/** Render Markdown `text` into a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !closesFence(lines[i], fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end of an answer still streaming)
      out.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2); // h3..h6: the page has its own h1/h2
      const h = document.createElement(`h${level}`);
      inline(h, heading[2]);
      out.append(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.append(document.createElement("hr"));
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      i = list(lines, i, out);
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        quoted.push(QUOTE.exec(lines[i])[1]);
        i += 1;
      }
      const q = document.createElement("blockquote");
      q.append(renderMarkdown(quoted.join("\n")));
      out.append(q);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
      para.push(lines[i]);
      i += 1;
    }
    const p = document.createElement("p");
    para.forEach((text, n) => {
      if (n) p.append(document.createElement("br"));
      inline(p, text);
    });
    out.append(p);
  }
  return out;
}

function closesFence(line, opener) {
  const trimmed = line.trim();
  return trimmed.length >= opener.length && trimmed === opener[0].repeat(trimmed.length);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line) || RULE.test(line);
}

function list(lines, i, out) {
  const ordered = !BULLET.test(lines[i]);
  const el = document.createElement(ordered ? "ol" : "ul");
  if (ordered) {
    const start = Number(NUMBERED.exec(lines[i])[1]);
    if (start !== 1) el.start = start;
  }
  const pattern = ordered ? NUMBERED : BULLET;
  let item = null;
  while (i < lines.length) {
    const line = lines[i];
    const match = pattern.exec(line);
    if (match) {
      item = document.createElement("li");
      inline(item, ordered ? match[2] : match[1]);
      el.append(item);
    } else if (item && line.trim() && /^\s+/.test(line) && !FENCE.test(line)) {
      item.append(document.createElement("br")); // a continuation line of the item
      inline(item, line.trim());
    } else {
      break;
    }
    i += 1;
  }
  out.append(el);
  return i;
}

function codeBlock(code, language) {
  const block = document.createElement("div");
  block.className = "code-block";
  const head = document.createElement("div");
  head.className = "code-head";
  const lang = document.createElement("span");
  lang.textContent = language || "code";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.textContent = "Copy";
  head.append(lang, copy);
  const pre = document.createElement("pre");
  const el = document.createElement("code");
  el.textContent = code;
  pre.append(el);
  block.append(head, pre);
  return block;
}

/** Append `text` to `parent` with its inline Markdown spans as elements, everything else as text. */
export function inline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    if (m[1] !== undefined) {
      const code = document.createElement("code");
      code.textContent = m[2].length > 2 && m[2].startsWith(" ") && m[2].endsWith(" ") ? m[2].slice(1, -1) : m[2];
      parent.append(code);
    } else {
      const strong = m[3] ?? m[4];
      const el = document.createElement(strong !== undefined ? "strong" : "em");
      inline(el, strong ?? m[5] ?? m[6]);
      parent.append(el);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}
