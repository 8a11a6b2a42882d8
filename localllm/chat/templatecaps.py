"""What a chat template can take, learnt by rendering probe conversations (as llama.cpp's minja does).

`probe(render)` renders a few small conversations through `render` (a callable that renders the template with
the given variables, or raises) and looks for marker text in the output: does a system message come out,
are `tools` listed, tool calls and tool results shown, two calls at once, arguments as an object or only as a
JSON string, does it need 9-character alphanumeric call ids (Mistral), does it refuse two user turns in a row.
`thinking` is read from the template's text (`enable_thinking`, `reasoning_content`, `<think>`).

The daemon runs `probe` inside a render worker (`sandbox.py`'s `probe` op), so it has the bounds of a render;
`prompt.py` adapts the messages to the result (its polyfills). This module imports neither.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import formats

Renderer = Callable[[dict[str, Any]], str]

_SYSTEM = "SysNeedle7"
_USER = "UserNeedle7"
_TOOL = "probe_tool_fn"
_ARG = "probe_arg_key"
_RESULT = "ToolResultNeedle7"
_VALUE = "ArgValueNeedle7"
_LONG_ID = "call_probe0000000000000000"
_SHORT_ID = "probe0001"


@dataclass(frozen=True)
class TemplateCaps:
    """What a template renders itself; False where a polyfill in `prompt.py` has to stand in."""

    system: bool = True  # a system message comes out (else: folded into the first user turn)
    tools: bool = False  # `tools` definitions come out
    tool_calls: bool = False  # an assistant turn's `tool_calls` come out
    tool_responses: bool = False  # a `tool` message comes out
    parallel_calls: bool = False  # two calls in one turn both come out
    object_arguments: bool = True  # call arguments as an object (else as a JSON string)
    null_content: bool = False  # a call-only assistant turn may have `content: null`
    typed_content: bool = False  # content as a list of `{"type": "text", "text"}` parts comes out
    short_call_ids: bool = False  # call ids must be 9 alphanumerics (Mistral)
    alternates: bool = False  # two user turns in a row are refused (merge consecutive same-role turns)
    thinking: bool = False  # the template knows reasoning (`enable_thinking`, `reasoning_content`, `<think>`)
    functions_text: bool = False  # it reads the tools as JSON text in a `functions` variable (firefunction v2)
    datetime_text: bool = False  # it reads the date and time as text in a `datetime` variable (firefunction v2)

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemplateCaps:
        return cls(**{k: bool(data[k]) for k in cls.__dataclass_fields__ if k in data})


def thinking(template: str) -> bool:
    """Whether a template has a reasoning mode (read from its text, no render needed): it switches thinking,
    renders earlier reasoning, or shows its family's reasoning markers (`formats.reasons`)."""
    marks = ("enable_thinking", "reasoning_content", "<think>")
    return any(mark in template for mark in marks) or formats.reasons(template)


def _tool() -> dict[str, Any]:
    schema = {"type": "object", "properties": {_ARG: {"type": "string"}}, "required": [_ARG]}
    return {"type": "function", "function": {"name": _TOOL, "description": "probe", "parameters": schema}}


def _call(call_id: str, *, as_string: bool, name: str = _TOOL) -> dict[str, Any]:
    arguments: Any = {_ARG: _VALUE}
    if as_string:
        arguments = json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def functions_text(tools: list[dict[str, Any]]) -> str:
    """The `functions` variable of templates that take the tools as JSON text."""
    return json.dumps([t["function"] for t in tools], ensure_ascii=False, indent=4)


def datetime_text() -> str:
    """The `datetime` variable of templates that read the time as text (as llama.cpp passes it)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%b %d %Y %H:%M:%S GMT")


def _variables(messages: list[dict[str, Any]], *, tools: bool = False, prompt: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": messages, "add_generation_prompt": prompt, "bos_token": "", "eos_token": ""}
    if tools:
        out["tools"] = [_tool()]
    return out


def probe(
    template: str,
    render: Renderer,
    free: frozenset[str] = frozenset(),
    fatal: tuple[type[BaseException], ...] = (),
) -> TemplateCaps:
    """The capabilities of `template`, `render` being how to render it (which raises on a template error);
    `free` are the variables it reads without setting them. An error of a `fatal` type (a bound: a template
    that goes past one on these small conversations is hostile) stops the probing and propagates."""
    functions, dated = "functions" in free, "datetime" in free

    def text(messages: list[dict[str, Any]], **kw: Any) -> str | None:
        variables = _variables(messages, **kw)
        if functions:
            variables["functions"] = functions_text(variables.get("tools", []))
        if dated:
            variables["datetime"] = datetime_text()
        try:
            return render(variables)
        except fatal:
            raise
        except Exception:  # the template refused or failed on this probe: that is the answer
            return None

    def shows(needle: str, messages: list[dict[str, Any]], **kw: Any) -> bool:
        out = text(messages, **kw)
        return out is not None and needle in out

    user = {"role": "user", "content": _USER}
    system = shows(_SYSTEM, [{"role": "system", "content": _SYSTEM}, user])
    typed = shows(_USER, [{"role": "user", "content": [{"type": "text", "text": _USER}]}])
    tools = shows(_TOOL, [user], tools=True)
    alternates = text([user, {"role": "user", "content": "again"}]) is None

    # Tool calls: which id shape and argument shape does the template take?
    short_ids, object_arguments, tool_calls = False, True, False
    for call_id, as_string in ((_LONG_ID, False), (_LONG_ID, True), (_SHORT_ID, False), (_SHORT_ID, True)):
        turn = {"role": "assistant", "content": "", "tool_calls": [_call(call_id, as_string=as_string)]}
        out = text([user, turn], tools=True, prompt=False)
        if out is not None and _VALUE in out:
            short_ids, object_arguments, tool_calls = call_id == _SHORT_ID, not as_string, True
            break
    call_id = _SHORT_ID if short_ids else _LONG_ID
    call = _call(call_id, as_string=not object_arguments)
    turn = {"role": "assistant", "content": "", "tool_calls": [call]}
    result = {"role": "tool", "name": _TOOL, "tool_call_id": call_id, "content": _RESULT}
    tool_responses = shows(_RESULT, [user, turn, result], tools=True)
    null_content = tool_calls and shows(_VALUE, [user, {**turn, "content": None}], tools=True, prompt=False)
    parallel = False
    if tool_calls:
        second = _call(call_id[:-1] + "2", as_string=not object_arguments, name=_TOOL + "_two")
        parallel = shows(_TOOL + "_two", [user, {**turn, "tool_calls": [call, second]}], tools=True, prompt=False)
    return TemplateCaps(
        system=system,
        tools=tools,
        tool_calls=tool_calls,
        tool_responses=tool_responses,
        parallel_calls=parallel,
        object_arguments=object_arguments,
        null_content=null_content,
        typed_content=typed,
        short_call_ids=short_ids,
        alternates=alternates,
        thinking=thinking(template),
        functions_text=functions,
        datetime_text=dated,
    )
