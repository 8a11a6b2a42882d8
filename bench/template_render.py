"""Time one normal chat render: a 10-message conversation through a real Hugging Face chat template (Qwen2.5's).

    .venv/bin/python bench/template_render.py [--before PATH_TO_OLD_PROMPT_PY]

Prints the median per render of: the daemon's render path with the sandbox in-process (`Templates.render_template`
over an `InlineRenderer`, the compiled template cached) and the daemon's worker round trip (`RenderPool.render`:
a bounded render worker process). With `--before`, also the old in-process render (a `prompt.py` from before
bounded rendering, which compiled the template on every render, e.g. extracted with
`git show f32702a:localllm/prompt.py > /tmp/prompt_before.py`; the module is localllm/chat/prompt.py now).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from typing import Any

from localllm.chat import prompt
from localllm.chat.renderpool import InlineRenderer, RenderPool, TemplateSource
from localllm.domain.messages import ChatMessage
from localllm.service.templates import Templates

QWEN25 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n"
    '            {%- endif %}\n            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    '            {{- tool_call.name }}\n            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

MESSAGES = [ChatMessage("system", "You are a concise assistant.")] + [
    ChatMessage("user" if i % 2 == 0 else "assistant", f"Message {i}: tell me about the sky, briefly. " * 3)
    for i in range(9)
]


def median_us(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def inline_us(repeat: int) -> float:
    templates = Templates(InlineRenderer())
    await templates.render_template(MESSAGES, template=QWEN25)  # probes the template once
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await templates.render_template(MESSAGES, template=QWEN25)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def pool_us(repeat: int) -> float:
    pool = RenderPool(1)
    job = prompt.chat_render(MESSAGES, template=QWEN25)
    assert not isinstance(job, str)
    source = TemplateSource("bench")
    try:
        await pool.render(job.template, job.variables, max_bytes=1 << 20, source=source)  # starts the worker
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            await pool.render(job.template, job.variables, max_bytes=1 << 20, source=source)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="a prompt.py from before bounded rendering")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    text = asyncio.run(Templates(InlineRenderer()).render_template(MESSAGES, template=QWEN25))
    print(f"10-message chat through Qwen2.5's template: {len(text)} characters; median of {args.repeat}")
    if args.before:
        spec = importlib.util.spec_from_file_location("localllm._prompt_before", args.before)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old
        spec.loader.exec_module(old)
        assert old.render_chat(MESSAGES, template=QWEN25) == text
        us = median_us(lambda: old.render_chat(MESSAGES, template=QWEN25), args.repeat)
        print(f"before, in the event loop's thread (compiled every time): {us:8.0f} µs")
    us = asyncio.run(inline_us(args.repeat))
    print(f"after, sandbox in-process (compiled once, counted):        {us:8.0f} µs")
    us = asyncio.run(pool_us(args.repeat))
    print(f"after, the daemon's path (render worker round trip):       {us:8.0f} µs")


if __name__ == "__main__":
    main()
