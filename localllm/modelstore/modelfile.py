'''Modelfiles: Ollama's recipe for a model, read (`parse`) and written back (`format`).

    # a comment
    FROM hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0    a model name, or a GGUF file (a path)
    FROM ./mmproj-model-f16.gguf                            a second FROM: the multimodal projector (Ollama's form)
    PARAMETER temperature 0.2                               any option of types.OPTION_TYPES; `stop` repeats
    TEMPLATE """{{ bos_token }}…"""                         a Jinja2 chat template (Hugging Face variables)
    SYSTEM """You are a helpful assistant."""
    ADAPTER ./lora.gguf                                     repeatable
    LICENSE """Apache License 2.0 …"""                      repeatable
    MESSAGE user Hello!                                     system, user or assistant; repeatable

Keywords are case-insensitive. A value runs to the end of its line, stripped of surrounding blanks. A value
that starts with `"` (or `"""`) runs on, over as many lines as it takes, to the first line that ends with `"`
(or `"""`); the text between the quotes is kept exactly as written, with no escapes. That is how Ollama's
parser reads a Modelfile, so Ollama's Modelfiles read the same here.

Every problem is a `ModelfileError` whose message starts with `line N:`.
'''

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..domain.errors import InvalidRequest, ModelfileError
from ..domain.messages import ChatMessage
from ..domain.options import DEPRECATED_OPTIONS, OPTION_TYPES, parse_options

INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE")
MESSAGE_ROLES = ("system", "user", "assistant")
# Ollama instructions that have no meaning here; named so the error can say so.
_UNSUPPORTED = {
    "DRAFT": "speculative decoding with a draft model is not supported",
    "RENDERER": "localllm renders prompts with the model's Jinja2 chat template (use TEMPLATE)",
    "PARSER": "localllm reads tool calls from the output itself; there are no built-in parsers to choose",
    "REQUIRES": "it names a minimum Ollama version",
}
_TEMPLATE_VARIABLES = "messages, add_generation_prompt, bos_token, eos_token, tools"
# `{{ .Prompt }}`, `{{- .System }}`, `{{ if .System }}`, `{{ range .Messages }}`, `{{ end }}`: Go, not Jinja2.
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:\.|(?:if|range|with|end|else|template|block|define)\b)")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BOOLS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]+")
_WORD = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class Modelfile:
    """What a Modelfile says: the base model and the layers of the new model's own."""

    from_: str
    parameters: dict[str, Any] = field(default_factory=dict)  # option -> value; `stop` -> list of strings
    projector: str | None = None  # the second FROM: a projector GGUF (mmproj), a file
    template: str | None = None
    system: str | None = None
    adapters: tuple[str, ...] = ()
    license: tuple[str, ...] = ()
    messages: tuple[ChatMessage, ...] = ()


def parse_parameter(name: str, raw: str) -> Any:
    """The typed value of `PARAMETER name raw` (for `stop`, the one string); `InvalidRequest` if it is not one.

    The value is checked as an `options` value of the API is (`types.parse_options`): its type and range.
    """
    key = name.lower()
    where = f"parameters.{key}"
    if key in DEPRECATED_OPTIONS:
        raise InvalidRequest(f"parameter {name!r} is deprecated and has no effect: remove it", field=where)
    types = OPTION_TYPES.get(key)
    if types is None:
        close = difflib.get_close_matches(key, OPTION_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidRequest(f"unknown parameter {name!r}{hint}", field=where)
    value: Any
    if key == "stop":
        if not raw:
            raise InvalidRequest("parameter 'stop' needs a non-empty string", field=where)
        value = raw
    elif types == (str,):
        value = raw
    elif types == (bool,):
        if raw.lower() not in _BOOLS:
            raise InvalidRequest(f"parameter {key!r} must be true or false, got {raw!r}", field=where)
        value = _BOOLS[raw.lower()]
    elif types == (str,):
        value = raw
    elif types == (int,):
        if not _INT.fullmatch(raw):
            raise InvalidRequest(f"parameter {key!r} must be an integer, got {raw!r}", field=where)
        value = int(raw)
    else:
        if not _FLOAT.fullmatch(raw) or not math.isfinite(float(raw)):
            raise InvalidRequest(f"parameter {key!r} must be a number, got {raw!r}", field=where)
        value = float(raw)
    checked = parse_options({key: [value] if key == "stop" else value}, field="parameters")  # ranges, choices
    return value if key == "stop" else getattr(checked, key)


def parse(text: str) -> Modelfile:
    """Read a Modelfile; `ModelfileError` (`line N: ...`) when it is not a valid one."""
    lines = _lines(text.removeprefix("\ufeff"))
    state = _State()
    i = 0
    while i < len(lines):
        head = lines[i].lstrip()
        if not head or head.startswith("#"):
            i += 1
            continue
        lineno = i + 1
        word, rest = _split_word(head)
        keyword = word.upper()
        if keyword in _UNSUPPORTED:
            raise ModelfileError(f"{keyword} is not supported: {_UNSUPPORTED[keyword]}", line=lineno)
        if keyword not in INSTRUCTIONS:
            raise ModelfileError(
                f"unknown instruction {word!r}: an instruction is one of {', '.join(INSTRUCTIONS)}", line=lineno
            )
        argument = ""
        if keyword in {"PARAMETER", "MESSAGE"}:
            argument, rest = _split_word(rest)
            if not argument:
                what = "a parameter name and a value" if keyword == "PARAMETER" else "a role and a text"
                raise ModelfileError(f"{keyword} needs {what}", line=lineno)
        if not rest.strip():
            raise ModelfileError(f"{' '.join(filter(None, (keyword, argument)))} needs a value", line=lineno)
        value, end = _read_value(lines, i, rest)
        state.add(keyword, argument, value, lineno)
        i = end + 1
    return state.build()


def format(mf: Modelfile) -> str:
    """Write `mf` as a Modelfile that `parse` reads back to `mf`.

    A value is written bare when it can be, else between `"` or `\"\"\"` (TEMPLATE, SYSTEM, LICENSE and
    texts of several lines prefer `\"\"\"`). A value that no quoting can hold, since Ollama's format has no
    escapes, is a `ValueError`: one with a line (not its last) that ends in `\"\"\"`, or with a carriage return.
    """
    out = [f"FROM {_quote(mf.from_, 'FROM')}"]
    if mf.projector is not None:
        out.append(f"FROM {_quote(mf.projector, 'FROM')}")
    out += [f"ADAPTER {_quote(path, 'ADAPTER')}" for path in mf.adapters]
    if mf.template is not None:
        out.append(f"TEMPLATE {_quote(mf.template, 'TEMPLATE', _BLOCK_FIRST)}")
    if mf.system is not None:
        out.append(f"SYSTEM {_quote(mf.system, 'SYSTEM', _BLOCK_FIRST)}")
    for key, value in mf.parameters.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            out.append(f"PARAMETER {key} {_parameter_text(key, item)}")
    out += [f"MESSAGE {m.role} {_quote(m.content, 'MESSAGE')}" for m in mf.messages]
    out += [f"LICENSE {_quote(text, 'LICENSE', _BLOCK_FIRST)}" for text in mf.license]
    return "\n".join(out) + "\n"


def to_create_request(
    mf: Modelfile,
    *,
    model: str,
    files: Mapping[str, str] | None = None,
    adapters: Mapping[str, str] | None = None,
    projector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The body of `POST /api/create` (Ollama's shape) that builds `model` from `mf`.

    `files` ({file name: "sha256:<hex>"}) names uploaded GGUF blobs that replace `FROM` (a local file);
    `projector` likewise names the uploaded projector (the second FROM), which must be given when `mf` has one:
    it goes in `files` too, and the daemon tells it from the model by its GGUF metadata, as Ollama does.
    `adapters` names the uploaded ADAPTER files, which must be given when `mf` has any.
    """
    if mf.adapters and not adapters:
        raise ValueError("the Modelfile has ADAPTER files: upload them and pass their digests as adapters")
    if mf.projector is not None and not projector:
        raise ValueError("the Modelfile has a projector (a second FROM): upload it and pass its digest as projector")
    body: dict[str, Any] = {"model": model}
    if files or projector:
        body["files"] = {**(files or {}), **(projector or {})}
    if not files:
        body["from"] = mf.from_
    if adapters:
        body["adapters"] = dict(adapters)
    if mf.template is not None:
        body["template"] = mf.template
    if mf.system is not None:
        body["system"] = mf.system
    if mf.parameters:
        body["parameters"] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in mf.parameters.items()}
    if mf.messages:
        body["messages"] = [{"role": m.role, "content": m.content} for m in mf.messages]
    if mf.license:
        body["license"] = list(mf.license)
    body["stream"] = True
    return body


# -- reading ------------------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _split_word(text: str) -> tuple[str, str]:
    """The first word of `text` and what follows it, blanks between them dropped (`("", "")` for blank text)."""
    match = _WORD.fullmatch(text)
    return (match[1], match[2]) if match else ("", "")


def _read_value(lines: list[str], i: int, start: str) -> tuple[str, int]:
    """The value that begins with `start` on line `i` (0-based), and the index of the line it ends on."""
    quote = '"""' if start.startswith('"""') else '"' if start.startswith('"') else ""
    if not quote:
        return start.strip(), i
    text, end = start, i
    while True:
        body = text.strip()
        if len(body) >= 2 * len(quote) and body.endswith(quote):
            return body[len(quote) : -len(quote)], end
        end += 1
        if end >= len(lines):
            raise ModelfileError(
                f"the value opened with {quote} is never closed (no line ends with {quote})", line=i + 1
            )
        text += "\n" + lines[end]


@dataclass
class _State:
    """What has been read so far, with the line each single instruction came from."""

    from_: str | None = None
    projector: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # FROM, TEMPLATE, SYSTEM, parameter names -> line

    def once(self, what: str, line: int) -> None:
        if what in self.seen:
            raise ModelfileError(f"{what} is given twice (first on line {self.seen[what]})", line=line)
        self.seen[what] = line

    def add(self, keyword: str, argument: str, value: str, line: int) -> None:
        if keyword == "FROM":
            if not value:
                raise ModelfileError("FROM needs a model name or a GGUF file", line=line)
            if self.from_ is None:
                self.seen["FROM"] = line
                self.from_ = value
            elif self.projector is None:
                self.seen["FROM projector"] = line
                self.projector = value
            else:
                raise ModelfileError(
                    f"FROM is given a third time (first on line {self.seen['FROM']}, then on line"
                    f" {self.seen['FROM projector']}): a Modelfile takes a model and at most one projector",
                    line=line,
                )
        elif keyword == "TEMPLATE":
            self.once("TEMPLATE", line)
            _check_template(value, line)
            self.template = value
        elif keyword == "SYSTEM":
            self.once("SYSTEM", line)
            self.system = value
        elif keyword == "ADAPTER":
            if not value:
                raise ModelfileError("ADAPTER needs a file", line=line)
            self.adapters.append(value)
        elif keyword == "LICENSE":
            self.license.append(value)
        elif keyword == "MESSAGE":
            role = argument.lower()
            if role not in MESSAGE_ROLES:
                raise ModelfileError(
                    f"MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}, got {argument!r}", line=line
                )
            self.messages.append(ChatMessage(role, value))
        else:
            self.add_parameter(argument, value, line)

    def add_parameter(self, name: str, raw: str, line: int) -> None:
        if not _PARAMETER_NAME.fullmatch(name):
            raise ModelfileError(f"invalid parameter name {name!r}", line=line)
        try:
            value = parse_parameter(name, raw)
        except InvalidRequest as exc:
            raise ModelfileError(str(exc), line=line) from None
        key = name.lower()
        if key == "stop":
            self.parameters.setdefault("stop", []).append(value)
        else:
            self.once(f"PARAMETER {key}", line)
            self.parameters[key] = value

    def build(self) -> Modelfile:
        if self.from_ is None:
            raise ModelfileError("no FROM instruction: a Modelfile needs FROM <model name or GGUF file>", line=1)
        return Modelfile(
            from_=self.from_,
            projector=self.projector,
            parameters=self.parameters,
            template=self.template,
            system=self.system,
            adapters=tuple(self.adapters),
            license=tuple(self.license),
            messages=tuple(self.messages),
        )


def _check_template(template: str, line: int) -> None:
    match = _GO_TEMPLATE.search(template)
    if match is None:
        return
    at = line + template.count("\n", 0, match.start())
    close = template.find("}}", match.start())
    snippet = template[match.start() : close + 2 if close >= 0 else match.end()]
    raise ModelfileError(
        f"TEMPLATE looks like an Ollama Go template ({snippet!r}); localllm templates are Jinja2 chat templates, "
        f"as in Hugging Face's tokenizer_config.json, with the variables {_TEMPLATE_VARIABLES} "
        "(e.g. {% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %})",
        line=at,
    )


# -- writing ------------------------------------------------------------------------------------------------


_BARE_FIRST = ("bare", "quoted", "block")
_BLOCK_FIRST = ("block", "quoted", "bare")  # TEMPLATE, SYSTEM, LICENSE, as Ollama writes them
_QUOTED_FIRST = ("quoted", "bare", "block")  # PARAMETER stop, as Ollama's library writes it


def _quote(value: str, what: str, order: tuple[str, ...] = _BARE_FIRST) -> str:
    """`value` in the first form of `order` that `_read_value` reads back to it."""
    forms = {"bare": value, "quoted": f'"{value}"', "block": f'"""{value}"""'}
    if "\n" in value and order == _BARE_FIRST:
        order = _BLOCK_FIRST  # several lines read best between triple quotes
    for form in order:
        text = forms[form]
        if not text.strip():
            continue  # a blank value reads as no value at all
        lines = _lines(text)
        try:
            read, end = _read_value(lines, 0, lines[0])
        except ModelfileError:
            continue
        if read == value and end == len(lines) - 1:
            return text
    raise ValueError(
        f"{what} value {value[:60]!r} cannot be written in a Modelfile: a line of it (not the last) ends in"
        """ '\"\"\"', which would end the value there, or it holds a carriage return"""
    )


def _parameter_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _quote(str(value), f"PARAMETER {key}", _QUOTED_FIRST)
