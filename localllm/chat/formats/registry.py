"""Which format family a chat template writes, read from its text as llama.cpp's `common/chat.cpp` does.

The checks run in order, most specific first; a template that matches none gets `GENERIC` (`<think>` tags
and the usual JSON call shapes), so a model whose template we do not know parses as it did before.
"""

from __future__ import annotations

from collections.abc import Callable

from . import calls as c
from . import channels
from .base import Family

THINK = ("<think>", "</think>")
HERMES = c.json_block("<tool_call>", "</tool_call>")
DEEPSEEK_CALLS = ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>")

QWEN3_CODER = Family(
    "qwen3-coder",
    THINK,
    c.repeated(("<tool_call>", "<function="), c.xml_function(("<tool_call>", "</tool_call>"), trim=True)),
    ("<tool_call>", "<function="),
    description="<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>",
)
FAMILIES: list[tuple[Callable[[str], bool], Family]] = [
    (
        lambda s: "[SYSTEM_PROMPT]" in s and "[TOOL_CALLS]" in s and "[ARGS]" in s and "[CALL_ID]" not in s,
        Family(
            "ministral-3",
            ("[THINK]", "[/THINK]"),
            c.repeated(("[TOOL_CALLS]",), c.mistral),
            ("[TOOL_CALLS]",),
            description="[THINK]…[/THINK], [TOOL_CALLS]NAME[ARGS]{…}",
        ),
    ),
    (lambda s: "<|channel|>" in s, Family("gpt-oss", custom=channels.harmony, description="harmony channels")),
    (
        lambda s: "<atem:function_calls>" in s and "<|eom|>" in s,
        Family("muse-glimmer", custom=channels.muse, description="to=user / to=self / to=NAME messages"),
    ),
    (
        lambda s: ">>>all" in s,
        Family("functionary-v3.2", markers=(">>>",), custom=channels.functionary_v32, description=">>>NAME\\n{…}"),
    ),
    (
        lambda s: "<|tool_calls_section_begin|>" in s and "<|tool_call_begin|>" in s,
        Family(
            "kimi-k2",
            THINK,
            c.repeated(
                ("<|tool_calls_section_begin|>", "<|tool_call_begin|>"),
                channels.kimi_section,
            ),
            ("<|tool_calls_section_begin|>", "<|tool_call_begin|>"),
            description="<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:i<|tool_call_argument_begin|>{…}",
        ),
    ),
    (
        lambda s: "<|open|>" in s and "<|close|>" in s and "<|end_of_msg|>" in s,
        Family(
            "kimi-k3",
            ("<|open|>think<|sep|>", "<|close|>think<|sep|>"),
            c.repeated(("<|open|>tools<|sep|>",), c.kimi3),
            ("<|open|>tools<|sep|>",),
            ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>"),
            description="<|open|>think/response/tools<|sep|> blocks",
            ends=("<|open|>response<|sep|>",),
        ),
    ),
    (
        lambda s: "<role>ASSISTANT</role>" in s and "<arg_key>" in s,
        Family(
            "ling-3",
            THINK,
            c.repeated(("<tool_call>",), c.arg_key("<tool_call>", "</tool_call>")),
            ("<tool_call>",),
            ("<|role_end|>",),
            description="<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>",
        ),
    ),
    (
        lambda s: "<|START_TEXT|>" in s and "<|START_ACTION|>" in s,
        Family(
            "cohere2moe",
            ("<|START_THINKING|>", "<|END_THINKING|>"),
            c.repeated(
                ("<|START_ACTION|>",), c.json_block("<|START_ACTION|>", "<|END_ACTION|>", id_key="tool_call_id")
            ),
            ("<|START_ACTION|>",),
            ("<|START_TEXT|>", "<|END_TEXT|>"),
            description="<|START_THINKING|>…<|END_THINKING|>, <|START_ACTION|>[{tool_call_id, tool_name, parameters}]",
        ),
    ),
    (
        lambda s: "<|tool_list_start|>" in s or "List of tools: [" in s,
        Family(
            "lfm2",
            THINK,
            c.repeated(("<|tool_call_start|>",), c.python_list("<|tool_call_start|>", "<|tool_call_end|>")),
            ("<|tool_call_start|>",),
            description="<|tool_call_start|>[NAME(k=v)]<|tool_call_end|>",
        ),
    ),
    (
        lambda s: "<|role_sep|>" in s and "<|message_sep|>" in s and "<|function_call|>" not in s,
        Family(
            "gigachat-3",
            None,
            c.repeated(("<|message_sep|>",), channels.json_after(r"<\|message_sep\|>\s*function call<\|role_sep\|>")),
            ("<|message_sep|>",),
            description="<|message_sep|>function call<|role_sep|>{name, arguments}",
        ),
    ),
    (
        lambda s: "<|function_call|>" in s and "<|role_sep|>" in s,
        Family(
            "gigachat-3.1",
            None,
            c.repeated(("<|function_call|>",), channels.json_after(r"<\|function_call\|>")),
            ("<|function_call|>",),
            description="<|function_call|>{name, arguments}",
        ),
    ),
    (
        lambda s: "Tool usage guidelines:" in s and '<function name="' in s and '<param name="' in s,
        Family(
            "minicpm-5",
            THINK,
            c.repeated(('<function name="',), channels.minicpm),
            ('<function name="',),
            description='<function name="NAME"><param name="KEY">VALUE</param></function>',
        ),
    ),
    (
        lambda s: "]<]minimax[>[" in s and "<invoke name=" in s,
        Family(
            "minimax-m3",
            ("<mm:think>", "</mm:think>"),
            channels.minimax_m3,
            ("]<]minimax[>[<tool_call>",),
            description="]<]minimax[>[<tool_call> <invoke name=…> nested XML arguments",
            unopened=True,
        ),
    ),
    (
        lambda s: "dsml_token" in s and "DSML" in s,
        Family(
            "deepseek-v3.2",
            THINK,
            c.first_of(
                c.repeated(
                    ("<｜DSML｜function_calls>",),
                    c.invoke("｜DSML｜", ("<｜DSML｜function_calls>", "</｜DSML｜function_calls>"), typed_attr=True),
                ),
                c.repeated(
                    ("<｜DSML｜tool_calls>",),
                    c.invoke("｜DSML｜", ("<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"), typed_attr=True),
                ),
            ),
            ("<｜DSML｜function_calls>", "<｜DSML｜tool_calls>"),
            description='<｜DSML｜function_calls><｜DSML｜invoke name="…"><｜DSML｜parameter name="…" string="…">',
        ),
    ),
    (
        lambda s: "'<|tool_call>call:'" in s,
        Family(
            "gemma-4",
            ("<|channel>thought", "<channel|>"),
            c.repeated(("<|tool_call>",), c.gemma),
            ("<|tool_call>",),
            ("<channel|>", "<|channel>thought\n", "<|channel>"),
            description="<|channel>thought…<channel|>, <|tool_call>call:NAME{k:v}<tool_call|>",
        ),
    ),
    (
        lambda s: "<tool_call>" in s and "<function=" in s and "<parameter=" in s,
        QWEN3_CODER,
    ),
    (
        lambda s: "<seed:tool_call>" in s,
        Family(
            "seed-oss",
            ("<seed:think>", "</seed:think>"),
            c.repeated(("<seed:tool_call>",), c.xml_function(("<seed:tool_call>", "</seed:tool_call>"), trim=False)),
            ("<seed:tool_call>",),
            description="<seed:think>, <seed:tool_call><function=…><parameter=…>",
        ),
    ),
    (
        lambda s: "<arg_key>" in s,
        Family(
            "glm-4.5",
            THINK,
            c.repeated(("<tool_call>",), c.arg_key("<tool_call>", "</tool_call>")),
            ("<tool_call>",),
            description="<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>",
        ),
    ),
    (
        lambda s: "<minimax:tool_call>" in s,
        Family(
            "minimax-m2",
            THINK,
            c.repeated(("<minimax:tool_call>",), c.invoke("", ("<minimax:tool_call>", "</minimax:tool_call>"))),
            ("<minimax:tool_call>",),
            description='<minimax:tool_call><invoke name="…"><parameter name="…">',
        ),
    ),
    (
        lambda s: "tool▁calls▁begin" in s or "tool_calls_begin" in s,
        Family(
            "deepseek",
            THINK,
            c.repeated(DEEPSEEK_CALLS, channels.deepseek_calls),
            DEEPSEEK_CALLS,
            description="<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>",
        ),
    ),
    (
        lambda s: "<|START_ACTION|>" in s,
        Family(
            "command-r7b",
            ("<|START_THINKING|>", "<|END_THINKING|>"),
            c.repeated(
                ("<|START_ACTION|>",), c.json_block("<|START_ACTION|>", "<|END_ACTION|>", id_key="tool_call_id")
            ),
            ("<|START_ACTION|>",),
            ("<|START_RESPONSE|>", "<|END_RESPONSE|>"),
            description="<|START_THINKING|>…<|END_THINKING|>, <|START_RESPONSE|>, <|START_ACTION|>[…]<|END_ACTION|>",
        ),
    ),
    (
        lambda s: "Action:" in s and "<|CHATBOT_TOKEN|>" in s,
        Family(
            "command-r-plus",
            None,
            c.repeated(("Action:",), c.json_block("Action:", "```", fence=True)),
            ("Action:",),
            ("<|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
            description="Action:\\n```json\\n[{tool_name, parameters}]\\n```",
        ),
    ),
    (
        lambda s: "<TOOLCALL>" in s,
        Family(
            "nemotron-v2",
            THINK,
            c.repeated(("<TOOLCALL>",), c.json_block("<TOOLCALL>", "</TOOLCALL>")),
            ("<TOOLCALL>",),
            description="<TOOLCALL>[{name, arguments}]</TOOLCALL>",
        ),
    ),
    (
        lambda s: "[BEGIN FINAL RESPONSE]" in s,
        Family(
            "apriel-1.6",
            ("Here are my reasoning steps:\n", "[BEGIN FINAL RESPONSE]"),
            c.repeated(("<tool_calls>",), c.json_block("<tool_calls>", "</tool_calls>")),
            ("<tool_calls>",),
            ("<|end|>",),
            description="reasoning steps, [BEGIN FINAL RESPONSE], <tool_calls>[…]</tool_calls>",
            keeps_start=True,
        ),
    ),
    (
        lambda s: "<tool_calls>" in s,
        Family(
            "minimax-m1",
            THINK,
            c.repeated(("<tool_calls>",), c.json_block("<tool_calls>", "</tool_calls>")),
            ("<tool_calls>",),
            description="<tool_calls>[{name, arguments}]</tool_calls>",
        ),
    ),
    (
        lambda s: "<|tools_prefix|>" in s,
        Family(
            "apertus",
            THINK,
            c.repeated(("<|tools_prefix|>",), c.json_block("<|tools_prefix|>", "<|tools_suffix|>")),
            ("<|tools_prefix|>",),
            description="<|tools_prefix|>[{NAME: {…}}]<|tools_suffix|>",
        ),
    ),
    (
        lambda s: "functools[" in s,
        Family(
            "firefunction-v2",
            None,
            c.repeated(("functools",), c.json_block("functools", "")),
            ("functools",),
            description="functools[{name, arguments}]",
        ),
    ),
    (
        lambda s: "<function=" in s,
        Family(
            "functionary-v3.1",
            None,
            c.repeated(("<function=",), c.name_then_json("<function=", ">", "</function>")),
            ("<function=",),
            description="<function=NAME>{…}</function>",
        ),
    ),
    (
        lambda s: "[TOOL_CALLS]" in s,
        Family(
            "mistral",
            ("[THINK]", "[/THINK]"),
            c.repeated(("[TOOL_CALLS]",), c.mistral),
            ("[TOOL_CALLS]",),
            description="[TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{…} or [TOOL_CALLS][{…}]",
        ),
    ),
    (
        lambda s: "<|python_tag|>" in s or "<|start_header_id|>ipython" in s,
        Family("llama-3", None, channels.llama3, ("<|python_tag|>", "{"), description='{"name": …, "parameters": {…}}'),
    ),
    (
        lambda s: "<tool_call>" in s,
        Family(
            "hermes",
            THINK,
            c.repeated(("<tool_call>",), HERMES),
            ("<tool_call>",),
            description="<tool_call>{name, arguments}</tool_call>",
        ),
    ),
    (
        lambda s: "<|tool_call|>" in s,
        Family(
            "granite",
            THINK,
            c.repeated(("<|tool_call|>",), c.json_block("<|tool_call|>", "")),
            ("<|tool_call|>",),
            description="<|tool_call|>[{name, arguments}]",
        ),
    ),
]

GENERIC = Family(
    "generic",
    THINK,
    c.first_of(c.repeated(("<tool_call>",), HERMES), c.repeated(("[TOOL_CALLS]",), c.mistral), channels.llama3),
    ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"),
    description="<think>…</think>, <tool_call>{…}</tool_call>, [TOOL_CALLS][…], a bare JSON call",
)


def detect(template: str | None) -> Family:
    """The format family of a chat template (`GENERIC` when none is recognised)."""
    if template:
        for matches, family in FAMILIES:
            if matches(template):
                return family
    return GENERIC


def reasons(template: str | None) -> bool:
    """Whether the template's family writes reasoning in markers of its own that its text shows (Mistral's
    `[THINK]`, Command R7B's `<|START_THINKING|>`, …) or in channels (gpt-oss's `analysis`, Muse's `to=self`)."""
    family = detect(template)
    if family.name in ("gpt-oss", "muse-glimmer"):
        return True
    return bool(template) and family.think is not None and family.think[0].strip() in str(template)
