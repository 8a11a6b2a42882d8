"""Chat templates are untrusted code: render them in a sandbox that counts what they do, inside a worker process.

Two layers (docs/limits.md says why both):

- `BoundedEnvironment`, a Jinja2 `ImmutableSandboxedEnvironment` (no attribute tricks, no mutation of
  the messages) that also counts *steps* (every loop iteration, call and `range` item) against
  `TEMPLATE_STEPS`, refuses `*`, `+` and `**` that would build a string, list or integer past the render's
  bounds, and stops the output once it passes `max_bytes`. These fail fast, with a message naming the bound.
- The process this runs in: `python -I -m localllm.chat.sandbox` is a render worker (`renderpool.py` keeps a few),
  with its address space capped (RLIMIT_AS = `TEMPLATE_MEMORY`) and killed by the daemon after
  `TEMPLATE_SECONDS`, which stops whatever the counters miss (a filter asked for a gigabyte of padding, a
  slow built-in). A Python thread could not be stopped; a process can.

Worker protocol, on stdin/stdout: frames of a 4-byte big-endian length and a JSON object. The worker
first writes `{"ready": true}`. Requests
`{"op": "render", "template", "variables", "max_bytes"}`, `{"op": "check", "template"}` or
`{"op": "probe", "template"}` (its capabilities, `templatecaps.probe`); replies `{"text"}` (`{"caps"}` to a probe)
or `{"error": kind, "message", "line"?}` with kind `syntax`, `bound`, `output` (past `max_bytes`), `refused`
(the template's own `raise_exception`), `failed` (any other error) or `memory`.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
import jinja2.sandbox
import jinja2.visitor

from ..domain import limits
from . import templatecaps

LOOP = "__bounded_loop__"  # the global every `{% for %}` iterates through (a name no real template uses)


class BoundExceeded(Exception):
    """A render went past one of its bounds; the message names the bound."""


class OutputExceeded(BoundExceeded):
    """A render wrote more than its `max_bytes`."""


class Refused(Exception):
    """The template called `raise_exception` (it does not accept these messages)."""


class _Budget:
    def __init__(self, steps: int, max_bytes: int) -> None:
        self.left = steps
        self.max_bytes = max_bytes

    def charge(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise BoundExceeded(
                f"it took more than {limits.TEMPLATE_STEPS} steps (loop iterations, calls and range items)"
            )


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _budget() -> _Budget:
    budget = _BUDGET.get(None)
    if budget is None:  # outside `render` (e.g. a check): the default bounds still hold
        budget = _Budget(limits.TEMPLATE_STEPS, limits.PROMPT_MAX_BYTES)
        _BUDGET.set(budget)
    return budget


def _loop(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.charge()
        yield item


def _range(*args: int) -> range:
    rng = range(*args)
    _budget().charge(len(rng))
    return rng


def _raise(message: str) -> None:
    raise Refused(str(message))


def _plain(value: Any) -> Any:
    """`value` as JSON can take it: any other iterable (a generator, `dict.items()`, a Jinja2 undefined) as a
    list, as transformers' `tojson` does."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Iterable):
        return [_plain(v) for v in _loop(value)]
    return value


def _tojson(
    value: Any,
    indent: int | None = None,
    ensure_ascii: bool = False,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' `tojson`: unicode kept, its `indent`, `separators` and `sort_keys`, iterables as lists."""
    seps = (str(separators[0]), str(separators[1])) if separators is not None else None
    return json.dumps(
        _plain(value), indent=indent, ensure_ascii=ensure_ascii, separators=seps, sort_keys=sort_keys, default=str
    )


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


class _Generation(jinja2.ext.Extension):
    """transformers' `{% generation %}…{% endgeneration %}` (marks assistant text for training): its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        body: list[jinja2.nodes.Node] = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return body


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The sandbox with counted steps and bounded sizes (see the module docstring)."""

    intercepted_binops = frozenset({"*", "+", "**"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _Generation])
        self.filters["tojson"] = _tojson
        self.globals.update(
            {
                "range": _range,
                LOOP: _loop,
                "raise_exception": _raise,
                "strftime_now": lambda fmt: datetime.datetime.now().strftime(fmt),
            }
        )

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().charge()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(left.bit_length(), 1) * right > limits.TEMPLATE_INT_BITS:
                raise BoundExceeded(f"{left} ** {right} is larger than {limits.TEMPLATE_INT_BITS} bits")
        elif operator == "*":
            size = _length(left), _length(right)
            count = right if size[0] is not None else left
            length = size[0] if size[0] is not None else size[1]
            if length is not None and isinstance(count, int) and length * count > budget.max_bytes:
                raise BoundExceeded(f"a value of {length * count} items is longer than the output bound")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > limits.TEMPLATE_INT_BITS:
                    raise BoundExceeded(f"a product larger than {limits.TEMPLATE_INT_BITS} bits")
        elif operator == "+":
            a, b = _length(left), _length(right)
            if a is not None and b is not None and a + b > budget.max_bytes:
                raise BoundExceeded(f"a value of {a + b} items is longer than the output bound")
        return super().call_binop(context, operator, left, right)


_ENV = BoundedEnvironment()


class _CountLoops(jinja2.visitor.NodeTransformer):
    """Make every `{% for x in xs %}` iterate `__bounded_loop__(xs)`, which charges each item."""

    def visit_For(self, node: jinja2.nodes.For) -> jinja2.nodes.Node:
        self.generic_visit(node)
        node.iter = jinja2.nodes.Call(jinja2.nodes.Name(LOOP, "load"), [node.iter], [], None, None)
        return node


@functools.lru_cache(maxsize=32)
def compiled(template: str) -> jinja2.Template:
    """The template compiled with counted loops (cached by its text: most requests reuse a model's own)."""
    if len(template) > limits.TEMPLATE_MAX_BYTES or limits.utf8_len(template) > limits.TEMPLATE_MAX_BYTES:
        raise BoundExceeded(
            f"the template is {limits.utf8_len(template)} bytes, more than "
            f"{limits.size_text(limits.TEMPLATE_MAX_BYTES)}"
        )
    tree = _ENV.parse(template)
    _CountLoops().visit(tree)
    code = _ENV.compile(tree)
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def render(template: str, variables: dict[str, Any], *, max_bytes: int) -> str:
    """Render `template` with every bound but time and memory (which the worker process adds)."""
    budget = _Budget(limits.TEMPLATE_STEPS, max_bytes)
    token = _BUDGET.set(budget)
    try:
        out: list[str] = []
        size = 0
        for piece in compiled(template).generate(**variables):
            size += len(piece)
            if size > max_bytes:
                raise OutputExceeded(f"its output passed {limits.size_text(max_bytes)}")
            out.append(piece)
        text = "".join(out)
        if limits.utf8_len(text) > max_bytes:
            raise OutputExceeded(f"its output passed {limits.size_text(max_bytes)}")
        return text
    finally:
        _BUDGET.reset(token)


@functools.lru_cache(maxsize=128)
def probe(template: str) -> templatecaps.TemplateCaps:
    """The template's capabilities, each probe render with the bounds of a render (a syntax error raises)."""
    compiled(template)
    free = frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(template)))
    return templatecaps.probe(
        template, lambda variables: render(template, variables, max_bytes=1 << 20), free, fatal=(BoundExceeded,)
    )


def outcome(request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one worker request (also usable in-process: every error becomes a reply)."""
    try:
        if request.get("op") == "check":
            compiled(str(request["template"]))
            return {"text": ""}
        if request.get("op") == "probe":
            return {"caps": probe(str(request["template"])).as_dict()}
        text = render(str(request["template"]), dict(request["variables"]), max_bytes=int(request["max_bytes"]))
        return {"text": text}
    except jinja2.TemplateSyntaxError as exc:
        return {"error": "syntax", "message": exc.message or str(exc), "line": exc.lineno}
    except OutputExceeded as exc:
        return {"error": "output", "message": str(exc)}
    except BoundExceeded as exc:
        return {"error": "bound", "message": str(exc)}
    except Refused as exc:
        return {"error": "refused", "message": str(exc)}
    except MemoryError:
        return {"error": "memory", "message": f"it used more than {limits.size_text(limits.TEMPLATE_MEMORY)}"}
    except RecursionError:
        return {"error": "bound", "message": "it recursed too deeply"}
    except Exception as exc:  # any other error of the template's own making (TypeError, UndefinedError, ...)
        return {"error": "failed", "message": f"{type(exc).__name__}: {exc}"}


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    data: dict[str, Any] = json.loads(stream.read(size))
    return data


def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode("ascii")  # escaped: even a lone surrogate in a message travels intact
    return struct.pack(">I", len(data)) + data


def main() -> None:
    """A render worker: bounded address space; one request at a time; exits when the daemon closes stdin."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limits.TEMPLATE_MEMORY, limits.TEMPLATE_MEMORY))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(frame({"ready": True}))  # imported and bounded: the daemon may send work
    stdout.flush()
    while (request := read_frame(stdin)) is not None:
        # A CPU backstop in case the daemon is gone and cannot kill us: SIGXCPU past this render's share.
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime)
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        soft = spent + int(limits.TEMPLATE_SECONDS) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        reply = outcome(request)
        try:
            data = frame(reply)
        except MemoryError:
            data = frame({"error": "memory", "message": "its output did not fit in the worker's memory"})
        stdout.write(data)
        stdout.flush()
        if reply.get("error") == "memory":
            return  # after a MemoryError nothing is sure: the daemon starts a fresh worker


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):  # the daemon is gone
        pass
