"""How the CLI draws things: tables, sizes, times, durations, pull progress, timings and model summaries.

Everything here returns text; the commands decide where it goes (click.echo to stdout or stderr).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

_KB, _MB, _GB, _TB = 1000, 1000**2, 1000**3, 1000**4


def human_bytes(n: float) -> str:
    """A byte count in decimal units, as Ollama prints it: `512 B`, `1.2 MB`, `4.7 GB`, `270 MB`."""
    for unit, scale in (("TB", _TB), ("GB", _GB), ("MB", _MB), ("KB", _KB)):
        if n >= scale:
            value = n / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{int(n)} B"


def human_number(n: float) -> str:
    """A parameter count: `135M`, `1.7B`, `8B`."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            if unit in {"T", "B"} and round(value, 1) != round(value):
                return f"{value:.1f}{unit}"
            return f"{round(value)}{unit}"
    return str(int(n))


def human_duration(seconds: float) -> str:
    """A coarse duration in words, as in "2 minutes ago" (Ollama's format.humanDuration)."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = whole // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // (3600 * 24 * 365))} years"


_FOREVER_SECONDS = 20 * 365 * 24 * 3600
_ISO = re.compile(r"^(?P<base>[^.]*?)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$")


def parse_timestamp(value: object) -> datetime | None:
    """Read an RFC 3339 time as the daemon writes it (up to nanoseconds, `Z` or an offset); None if not one."""
    if not isinstance(value, str) or not value:
        return None
    match = _ISO.match(value.strip())
    if match is None:
        return None
    text = match["base"]
    if match["frac"]:
        text += "." + match["frac"][:6].ljust(6, "0")
    tz = match["tz"]
    if tz:
        text += "+00:00" if tz == "Z" else tz
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def human_time(when: datetime, now: datetime) -> str:
    """`2 minutes ago`, `4 minutes from now`, or `Forever` for a time more than 20 years ahead."""
    delta = (now - when).total_seconds()
    if delta < -_FOREVER_SECONDS:
        return "Forever"
    if delta < 0:
        return f"{human_duration(-delta)} from now"
    return f"{human_duration(delta)} ago"


def go_duration(nanoseconds: int) -> str:
    """A duration the way Go prints a time.Duration: `1.234567s`, `137.1ms`, `2m3s`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(int(nanoseconds))
    if ns < 1_000_000_000:
        for unit, scale, digits in (("ms", 1_000_000, 6), ("µs", 1_000, 3)):
            if ns >= scale:
                return f"{sign}{_decimal(ns // scale, ns % scale, digits)}{unit}"
        return f"{sign}{ns}ns"
    seconds, frac = divmod(ns, 1_000_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{_decimal(seconds, frac, 9)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _decimal(whole: int, frac: int, digits: int) -> str:
    tail = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by four spaces, like Ollama's `list` and `ps`."""
    lines = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "    ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def short_digest(digest: object) -> str:
    """The first 12 hex digits of a digest, with or without its `sha256:` prefix."""
    text = str(digest or "")
    return text.partition(":")[2][:12] if ":" in text else text[:12]


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model lives: `100% CPU`, `100% GPU` or `48%/52% CPU/GPU`."""
    if size_vram <= 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size <= 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def split_processor(devices: list[Any]) -> str:
    """Where a model split across RPC workers computes, by layers: `100% RPC` or `33%/67% local/RPC`."""
    layers = [(str(d.get("where", "")), int(d.get("layers") or 0)) for d in devices if isinstance(d, dict)]
    total = sum(n for _, n in layers)
    if total <= 0:
        return "Unknown"
    remote = round(100 * sum(n for where, n in layers if where != "local") / total)
    if remote in (0, 100):
        return "100% local" if remote == 0 else "100% RPC"
    return f"{100 - remote}%/{remote}% local/RPC"


def split_lines(name: str, devices: list[Any]) -> list[str]:
    """How a model is split across devices (RPC workers and this machine): a heading and a table."""
    rows = []
    for d in devices:
        if not isinstance(d, dict):
            continue
        rows.append(
            [
                str(d.get("name", "")),
                str(d.get("where", "")),
                str(d.get("layers", 0)),
                human_bytes(int(d.get("size") or 0)),
                human_bytes(int(d.get("free") or 0)) if d.get("free") else "",
            ]
        )
    return [f"{name} is split across:", table(["DEVICE", "WHERE", "LAYERS", "SIZE", "FREE BEFORE"], rows)]


def until(expires_at: object, now: datetime) -> str:
    """When a loaded model will be unloaded: `4 minutes from now`, `Forever` or `Stopping...`."""
    when = parse_timestamp(expires_at)
    if when is None:
        return "Forever" if expires_at in (None, "") else str(expires_at)
    if when <= now:
        return "Stopping..."
    return human_time(when, now)


CONTEXT_FULL = "… stopped: context full"


def stop_note(done: Mapping[str, Any], *, limited: bool) -> str | None:
    """What to say when an answer with no `num_predict` limit stopped for length: the context window is full
    (Ollama says nothing, and the answer just ends)."""
    if done.get("done_reason") == "length" and not limited:
        return CONTEXT_FULL
    return None


def has_limit(info: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> bool:
    """Whether answers are limited by `num_predict`: in these options, or in the model's parameters (`show`)."""
    if options and options.get("num_predict") is not None:
        return True
    return any(line.split()[:1] == ["num_predict"] for line in str(info.get("parameters") or "").splitlines())


def timings(done: Mapping[str, Any]) -> str:
    """Ollama's `--verbose` block from a final `done` chunk (durations in nanoseconds)."""
    lines: list[str] = []

    def count(key: str) -> int:
        value = done.get(key)
        return int(value) if isinstance(value, (int, float)) else 0

    total, load = count("total_duration"), count("load_duration")
    prompt_n, prompt_ns = count("prompt_eval_count"), count("prompt_eval_duration")
    eval_n, eval_ns = count("eval_count"), count("eval_duration")
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if prompt_n > 0:
        lines.append(f"prompt eval count:    {prompt_n} token(s)")
    if prompt_ns > 0:
        lines.append(f"prompt eval duration: {go_duration(prompt_ns)}")
        lines.append(f"prompt eval rate:     {prompt_n / (prompt_ns / 1e9):.2f} tokens/s")
    if eval_n > 0:
        lines.append(f"eval count:           {eval_n} token(s)")
    if eval_ns > 0:
        lines.append(f"eval duration:        {go_duration(eval_ns)}")
        lines.append(f"eval rate:            {eval_n / (eval_ns / 1e9):.2f} tokens/s")
    return "\n".join(lines)


class WordWrap:
    """Break streamed text at spaces into lines of at most `width` columns, as Ollama's REPL does on a terminal.

    A word is held back until the blank after it arrives (or `flush`), so it can move whole to the next line.
    Words longer than a line, and text that already has its own newlines, pass through as they are.
    """

    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self._column = 0
        self._word = ""

    def feed(self, text: str) -> str:
        """The text that can be shown now."""
        out: list[str] = []
        for char in text:
            if char == "\n":
                out.append(self._place() + "\n")
                self._column = 0
            elif char in " \t":
                out.append(self._place())
                if self._column + 1 > self.width:
                    out.append("\n")
                    self._column = 0
                else:
                    out.append(char)
                    self._column += 1
            else:
                self._word += char
        return "".join(out)

    def flush(self) -> str:
        """The word held back, at the end of the text."""
        return self._place()

    def _place(self) -> str:
        word, self._word = self._word, ""
        if not word:
            return ""
        prefix = ""
        if self._column > 0 and self._column + len(word) > self.width:
            prefix, self._column = "\n", 0
        self._column += len(word)
        return prefix + word


# -- pull progress ----------------------------------------------------------------------------------------

_BAR_FULL, _BAR_LEFT, _BAR_RIGHT = "█", "▕", "▏"
_RATE_WINDOW = 5.0


def progress_bar(label: str, completed: int, total: int, rate: float | None, eta: float | None, width: int) -> str:
    """`pulling 270cba1bd510: 100% ▕████████▏ 1.2 MB/1.2 MB  3.1 MB/s  0s`, sized to `width` columns."""
    completed = max(0, min(completed, total))
    percent = int(completed * 100 / total) if total > 0 else 0
    prefix = f"{label}: {percent:3d}% "
    suffix = f" {human_bytes(completed)}/{human_bytes(total)}"
    if rate is not None and rate > 0:
        suffix += f"  {human_bytes(rate)}/s"
    if eta is not None:
        suffix += f"  {go_duration(round(eta) * 1_000_000_000)}"
    bar_width = max(10, min(50, width - len(prefix) - len(suffix) - 3))
    filled = bar_width * completed // total if total > 0 else 0
    bar = _BAR_LEFT + _BAR_FULL * filled + " " * (bar_width - filled) + _BAR_RIGHT
    return prefix + bar + suffix


@dataclass
class _Layer:
    label: str
    total: int
    completed: int
    started: float
    start_completed: int
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.total > 0 and self.completed >= self.total


class PullProgress:
    """Turn `/api/pull` progress lines into terminal text: one bar per layer plus one line per status.

    On a terminal (`tty=True`) every update returns escape codes that redraw the block in place (at most
    every `interval` seconds, and whenever a line appears or a layer completes). Elsewhere each line is
    written once: a status when it first appears, a layer when it completes (or at `finish`).
    """

    def __init__(
        self, *, tty: bool, width: int = 80, clock: Callable[[], float] = time.monotonic, interval: float = 0.1
    ) -> None:
        self._tty = tty
        self._width = width
        self._clock = clock
        self._interval = interval
        self._order: list[str] = []
        self._layers: dict[str, _Layer] = {}
        self._written: set[str] = set()
        self._drawn = 0
        self._last_draw = -math.inf

    def update(self, event: Mapping[str, Any]) -> str:
        """Take one progress line; return the text to write to the terminal (often empty)."""
        now = self._clock()
        status = str(event.get("status") or "")
        digest = event.get("digest")
        total = event.get("total")
        changed = False
        if digest and isinstance(total, int) and total > 0:
            key = str(digest)
            completed = int(event.get("completed") or 0)
            layer = self._layers.get(key)
            if layer is None:
                label = status or f"pulling {short_digest(key)}"
                layer = self._layers[key] = _Layer(label, total, completed, now, completed)
                self._order.append(key)
                changed = True
            was_done = layer.done
            layer.total, layer.completed = total, max(layer.completed, completed)
            layer.samples.append((now, layer.completed))
            while len(layer.samples) > 2 and now - layer.samples[0][0] > _RATE_WINDOW:
                layer.samples.popleft()
            if layer.done and not was_done:
                layer.finished_at = now
                changed = True
        elif status:
            key = status
            if key not in self._order:
                self._order.append(key)
                changed = True
        else:
            return ""
        if self._tty:
            if changed or now - self._last_draw >= self._interval:
                return self._redraw(now)
            return ""
        return self._write_new(now)

    def finish(self) -> str:
        """The final text: the last state of every line; on a terminal, also show the cursor again."""
        now = self._clock()
        if self._tty:
            return self._redraw(now) + "\x1b[?25h" if self._order else ""
        return self._write_new(now, final=True)

    def _line(self, key: str, now: float) -> str:
        layer = self._layers.get(key)
        if layer is None:
            return key
        if layer.done:
            end = layer.finished_at if layer.finished_at is not None else now
            elapsed = end - layer.started
            rate = (layer.completed - layer.start_completed) / elapsed if elapsed > 0 else None
            return progress_bar(layer.label, layer.completed, layer.total, rate, 0, self._width)
        rate, eta = None, None
        if len(layer.samples) >= 2:
            (t0, c0), (t1, c1) = layer.samples[0], layer.samples[-1]
            if t1 > t0 and c1 > c0:
                rate = (c1 - c0) / (t1 - t0)
                eta = (layer.total - layer.completed) / rate
        return progress_bar(layer.label, layer.completed, layer.total, rate, eta, self._width)

    def _redraw(self, now: float) -> str:
        self._last_draw = now
        out = ["\x1b[?25l"]
        if self._drawn:
            out.append(f"\x1b[{self._drawn}A")
        for key in self._order:
            out.append("\r" + self._line(key, now)[: max(1, self._width - 1)] + "\x1b[K\n")
        self._drawn = len(self._order)
        return "".join(out)

    def _write_new(self, now: float, *, final: bool = False) -> str:
        out = []
        for key in self._order:
            if key in self._written:
                continue
            layer = self._layers.get(key)
            if layer is not None and not layer.done and not final:
                break  # keep the order: later lines wait for this layer
            self._written.add(key)
            out.append(self._line(key, now) + "\n")
        return "".join(out)


# -- show ---------------------------------------------------------------------------------------------------


def model_summary(info: Mapping[str, Any]) -> str:
    """Ollama's `show` summary: the model's architecture and size, capabilities, parameters, system, license."""
    details: Mapping[str, Any] = info.get("details") or {}
    model_info: Mapping[str, Any] = info.get("model_info") or {}
    arch = str(model_info.get("general.architecture") or details.get("family") or "")
    rows: list[tuple[str, str]] = []
    if arch:
        rows.append(("architecture", arch))
    count = model_info.get("general.parameter_count")
    if isinstance(count, (int, float)) and count > 0:
        rows.append(("parameters", human_number(count)))
    elif details.get("parameter_size"):
        rows.append(("parameters", str(details["parameter_size"])))
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        value = model_info.get(f"{arch}.{key}")
        if value is not None:
            rows.append((label, str(value)))
    if details.get("quantization_level"):
        rows.append(("quantization", str(details["quantization_level"])))

    sections = [_section("Model", rows)]
    capabilities = info.get("capabilities") or []
    if capabilities:
        sections.append(_section("Capabilities", [(str(c), "") for c in capabilities]))
    projector: Mapping[str, Any] = info.get("projector_info") or {}
    if projector:
        sections.append(_section("Projector", _projector_rows(projector)))
    parameters = [line.split(None, 1) for line in str(info.get("parameters") or "").splitlines() if line.strip()]
    if parameters:
        sections.append(_section("Parameters", [(p[0], p[1].strip() if len(p) > 1 else "") for p in parameters]))
    for title, key in (("System", "system"), ("License", "license")):
        text = _first_lines(info.get(key))
        if text:
            sections.append(_section(title, [(line, "") for line in text]))
    return "\n\n".join(sections)


def _projector_rows(projector: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Ollama's `show` Projector section: its architecture, parameters, embedding length and dimensions."""
    arch = str(projector.get("general.architecture") or "")
    rows = [("architecture", arch)] if arch else []
    count = projector.get("general.parameter_count")
    if isinstance(count, (int, float)) and count > 0:
        rows.append(("parameters", human_number(count)))
    for kind in ("vision", "audio"):
        for key, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            value = projector.get(f"{arch}.{kind}.{key}")
            if value is not None:
                rows.append((label if kind == "vision" else f"audio {label}", str(value)))
    return rows


def _first_lines(value: object, limit: int = 2) -> list[str]:
    if isinstance(value, list):
        value = "\n".join(str(v) for v in value)
    lines = [line.rstrip() for line in str(value or "").strip().splitlines() if line.strip()]
    return lines[:limit] + ["..."] if len(lines) > limit else lines


def _section(title: str, rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(k) for k, v in rows if v), default=0)
    body = [f"    {k.ljust(width)}    {v}".rstrip() if v else f"    {k}" for k, v in rows]
    return "\n".join([f"  {title}", *body])
