from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from localllm.domain.errors import InvalidRequest, ModelfileError
from localllm.domain.messages import ChatMessage
from localllm.modelstore.modelfile import Modelfile, format, parse, parse_parameter, to_create_request

FULL = '''# A Modelfile that uses every instruction.
FROM hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0

parameter temperature 0.2
PARAMETER num_ctx 4096
PARAMETER stop "<|im_end|>"
PARAMETER stop <|endoftext|>
PARAMETER use_mmap false
Template """{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}"""
SYSTEM """You are a helpful assistant."""
ADAPTER ./lora.gguf
LICENSE """Apache License
Version 2.0"""
LICENSE MIT
MESSAGE user Is the sky blue?
message ASSISTANT "Yes."
'''


def test_parse_reads_every_instruction() -> None:
    mf = parse(FULL)
    assert mf == Modelfile(
        from_="hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0",
        parameters={"temperature": 0.2, "num_ctx": 4096, "stop": ["<|im_end|>", "<|endoftext|>"], "use_mmap": False},
        template="{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        system="You are a helpful assistant.",
        adapters=("./lora.gguf",),
        license=("Apache License\nVersion 2.0", "MIT"),
        messages=(ChatMessage("user", "Is the sky blue?"), ChatMessage("assistant", "Yes.")),
    )
    assert type(mf.parameters["temperature"]) is float and type(mf.parameters["num_ctx"]) is int


def test_parse_ollamas_documented_example() -> None:
    text = """FROM llama3.2
# sets the temperature to 1 [higher is more creative, lower is more coherent]
PARAMETER temperature 1
# sets the context window size to 4096
PARAMETER num_ctx 4096

# sets a custom system message to specify the behavior of the chat assistant
SYSTEM You are Mario from super mario bros, acting as an assistant.
"""
    mf = parse(text)
    assert mf.from_ == "llama3.2"
    assert mf.parameters == {"temperature": 1.0, "num_ctx": 4096}
    assert mf.system == "You are Mario from super mario bros, acting as an assistant."
    assert mf.template is None and mf.messages == () and mf.license == () and mf.adapters == ()


@pytest.mark.parametrize(
    ("value_text", "value"),
    [
        ("plain words  ", "plain words"),
        ('"  kept blanks  "', "  kept blanks  "),
        ('"say "hi" twice"', 'say "hi" twice'),  # the value ends at the line that ends with the quote
        ('""', ""),
        ('""""""', ""),
        ('"""a "quoted" """ in the middle"""', 'a "quoted" """ in the middle'),
        ('"""\nfirst\n  second\n"""', "\nfirst\n  second\n"),
        ('"two\nlines"', "two\nlines"),
        ('"""ends in a quote""""', 'ends in a quote"'),
        ("C:\\models\\x.gguf", "C:\\models\\x.gguf"),  # no escapes
        ("# not a comment", "# not a comment"),
        ("\tafter a tab", "after a tab"),
    ],
)
def test_values_bare_quoted_and_blocks(value_text: str, value: str) -> None:
    assert parse(f"FROM m\nSYSTEM {value_text}\n").system == value


def test_blank_lines_comments_crlf_bom_and_indentation() -> None:
    text = '\ufeff\r\n  # comment\r\n\r\n\tFROM  m \r\nSYSTEM """a\r\nb"""\r\n   # another\r\n'
    mf = parse(text)
    assert mf.from_ == "m" and mf.system == "a\nb"


def test_keywords_and_parameter_names_and_roles_are_case_insensitive() -> None:
    mf = parse("from m\nPaRaMeTeR Temperature 0.5\nsystem hi\nmessage User hello\n")
    assert mf.parameters == {"temperature": 0.5}
    assert mf.system == "hi" and mf.messages == (ChatMessage("user", "hello"),)


def test_parameter_types() -> None:
    mf = parse(
        "FROM m\nPARAMETER top_k 40\nPARAMETER top_p .9\nPARAMETER seed -1\nPARAMETER repeat_penalty 1e0\n"
        'PARAMETER use_mmap TRUE\nPARAMETER mirostat 2\nPARAMETER stop "\\n\\n"\n'
    )
    assert mf.parameters == {
        "top_k": 40,
        "top_p": 0.9,
        "seed": -1,
        "repeat_penalty": 1.0,
        "use_mmap": True,
        "mirostat": 2,
        "stop": ["\\n\\n"],  # no escapes: a backslash and an n, as Ollama reads it
    }


def test_parse_parameter() -> None:
    assert parse_parameter("temperature", "0") == 0.0
    assert parse_parameter("NUM_PREDICT", "-2") == -2
    assert parse_parameter("stop", "User:") == "User:"
    assert parse_parameter("use_mmap", "f") is False
    assert parse_parameter("kv_cache_type", "Q4_0") == "q4_0"
    with pytest.raises(InvalidRequest) as bad:
        parse_parameter("kv_cache_type", "q2_k")
    assert bad.value.field == "parameters.kv_cache_type"
    with pytest.raises(InvalidRequest) as info:
        parse_parameter("temperature", "nan")
    assert info.value.field == "parameters.temperature"


# -- errors, each with its line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# only a comment\n", 1, "no FROM instruction"),
        ("PARAMETER temperature 1\n", 1, "no FROM instruction"),
        ("FROM m\n\nFOO bar\n", 3, "unknown instruction 'FOO': an instruction is one of FROM, PARAMETER"),
        ("FROM: m\n", 1, "unknown instruction 'FROM:'"),
        ("FROM m\nREQUIRES 0.5.0\n", 2, "REQUIRES is not supported"),
        ("FROM m\nDRAFT small\n", 2, "DRAFT is not supported"),
        ("FROM m\nRENDERER qwen3\n", 2, "RENDERER is not supported"),
        ("FROM m\nPARSER qwen3\n", 2, "PARSER is not supported"),
        ("FROM\n", 1, "FROM needs a value"),
        ('FROM ""\n', 1, "FROM needs a model name or a GGUF file"),
        ("FROM m\nFROM p.gguf\n\nFROM q.gguf\n", 4, "FROM is given a third time (first on line 1, then on line 2)"),
        ("FROM m\nSYSTEM a\n\nSYSTEM b\n", 4, "SYSTEM is given twice (first on line 2)"),
        ("FROM m\nTEMPLATE a\nTEMPLATE b\n", 3, "TEMPLATE is given twice (first on line 2)"),
        ("FROM m\nSYSTEM   \n", 2, "SYSTEM needs a value"),
        ("FROM m\nADAPTER\n", 2, "ADAPTER needs a value"),
        ("FROM m\nLICENSE\n", 2, "LICENSE needs a value"),
        ("FROM m\nPARAMETER\n", 2, "PARAMETER needs a parameter name and a value"),
        ("FROM m\nPARAMETER temperature\n", 2, "PARAMETER temperature needs a value"),
        ("FROM m\nPARAMETER temprature 0.1\n", 2, "unknown parameter 'temprature' (did you mean 'temperature'?)"),
        ("FROM m\nPARAMETER colour blue\n", 2, "unknown parameter 'colour'"),
        ("FROM m\nPARAMETER temp-erature 1\n", 2, "invalid parameter name 'temp-erature'"),
        ("FROM m\nPARAMETER temperature hot\n", 2, "parameter 'temperature' must be a number, got 'hot'"),
        ("FROM m\nPARAMETER temperature inf\n", 2, "must be a number, got 'inf'"),
        ("FROM m\nPARAMETER num_ctx 2048.5\n", 2, "parameter 'num_ctx' must be an integer, got '2048.5'"),
        ("FROM m\nPARAMETER num_ctx 1_000\n", 2, "must be an integer, got '1_000'"),
        ("FROM m\nPARAMETER use_mmap maybe\n", 2, "parameter 'use_mmap' must be true or false, got 'maybe'"),
        ("FROM m\nPARAMETER top_p 1.5\n", 2, "parameters.top_p must be between 0.0 and 1.0, got 1.5"),
        ("FROM m\nPARAMETER temperature -1\n", 2, "parameters.temperature must be at least 0.0"),
        ("FROM m\nPARAMETER penalize_newline true\n", 2, "parameter 'penalize_newline' is deprecated"),
        ('FROM m\nPARAMETER stop ""\n', 2, "parameter 'stop' needs a non-empty string"),
        ("FROM m\nPARAMETER seed 1\nPARAMETER seed 2\n", 3, "PARAMETER seed is given twice (first on line 2)"),
        ("FROM m\nMESSAGE\n", 2, "MESSAGE needs a role and a text"),
        ("FROM m\nMESSAGE user\n", 2, "MESSAGE user needs a value"),
        ("FROM m\nMESSAGE tool {}\n", 2, "MESSAGE role must be one of system, user, assistant, got 'tool'"),
        ('FROM m\nSYSTEM """never\nclosed\n', 2, 'the value opened with """ is never closed'),
        ('FROM m\n\nSYSTEM "never closed\nat all\n', 3, 'the value opened with " is never closed'),
        ("FROM m\nTEMPLATE {{ .Prompt }}\n", 2, "TEMPLATE looks like an Ollama Go template ('{{ .Prompt }}')"),
        ('FROM m\nTEMPLATE """<s>\n{{- if .System }}x{{ end }}"""\n', 3, "('{{- if .System }}')"),
        ('FROM m\nTEMPLATE """a\nb\n{{range .Messages}}"""\n', 4, "Go template"),
    ],
)
def test_errors_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    error = info.value
    assert str(error).startswith(f"line {line}: "), str(error)
    assert message in str(error)
    assert error.line == line
    assert error.field == "modelfile"
    assert isinstance(error, InvalidRequest) and isinstance(error, ValueError)


def test_go_template_error_explains_jinja2() -> None:
    with pytest.raises(ModelfileError) as info:
        parse('FROM m\nTEMPLATE """{{ .System }} {{ .Prompt }}"""\n')
    text = str(info.value)
    assert "localllm templates are Jinja2" in text
    for variable in ("messages", "add_generation_prompt", "bos_token", "eos_token", "tools"):
        assert variable in text


def test_jinja_templates_are_not_mistaken_for_go() -> None:
    template = "{{ bos_token }}{%- for m in messages %}{{ m['content'] }}{{ '.' }}{% endfor %}{{ 0.5 }}"
    assert parse(f'FROM m\nTEMPLATE """{template}"""').template == template


# -- format and the round trip ----------------------------------------------------------------------------


def test_format_writes_ollamas_layout() -> None:
    text = format(parse(FULL))
    assert text == (
        "FROM hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0\n"
        "ADAPTER ./lora.gguf\n"
        'TEMPLATE """{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"""\n'
        'SYSTEM """You are a helpful assistant."""\n'
        "PARAMETER temperature 0.2\n"
        "PARAMETER num_ctx 4096\n"
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|endoftext|>"\n'
        "PARAMETER use_mmap false\n"
        "MESSAGE user Is the sky blue?\n"
        "MESSAGE assistant Yes.\n"
        'LICENSE """Apache License\nVersion 2.0"""\n'
        'LICENSE """MIT"""\n'
    )


TRICKY = [
    "",
    " ",
    "plain",
    "  leading and trailing  ",
    '"',
    '""',
    '"""',
    'a "b" c',
    '"starts with a quote',
    'ends with a quote"',
    'ends with three"""',
    '"""starts with three',
    '""two first',
    "\n",
    "\n\n",
    "line one\nline two",
    'line "one"\nline two',
    'a"\nb',  # a line that ends in ": only """…""" holds it
    '""\nb',  # "\"\"\"\nb\"" would open a block: only """…""" holds it
    "# hash",
    'back\\slash \\n \\"',
    "tab\there\t",
    "unicode: héllo 🌍",
    "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
    "trailing newline\n",
    "  \n  indented\n",
]


def test_round_trip_over_tricky_values() -> None:
    for value in TRICKY:
        mf = Modelfile(
            from_=value.strip() or "m",
            parameters={"stop": [value]} if value else {},
            template=value,
            system=value,
            license=(value, value + "x"),
            messages=(ChatMessage("user", value), ChatMessage("assistant", value)),
            adapters=(value.strip() or "a.gguf",),
        )
        assert parse(format(mf)) == mf, value


def test_round_trip_over_generated_values() -> None:
    """Property-style: random texts over an alphabet of the characters that matter to quoting."""
    rng = random.Random(1234)
    alphabet = ['"', '"', "\n", " ", "\t", "a", "b", "#", "\\", "{", "}", "%", "é"]
    written = refused = 0
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        mf = Modelfile(from_="m", system=value, messages=(ChatMessage("user", value),))
        try:
            text = format(mf)
        except ValueError:
            refused += 1
            assert '"' in value  # only quotes can make a value unwritable
            continue
        written += 1
        assert parse(text) == mf, repr(value)
    assert written > 20 * refused


def test_round_trip_over_parameter_values() -> None:
    values: dict[str, list[Any]] = {
        "temperature": [0.0, 0.7, 1.0, 1e-05, 123.456],
        "top_k": [0, 40],
        "top_p": [0.0, 0.95, 1.0],
        "num_ctx": [0, 4096],
        "seed": [-1, 42],
        "use_mmap": [True, False],
        "stop": [["<|im_end|>"], ["a", "b c", '"q"', "\n"]],
        "mirostat_eta": [0.1],
        "kv_cache_type": ["f16", "q8_0"],
    }
    for combo in itertools.product(*values.values()):
        mf = Modelfile(from_="m", parameters=dict(zip(values, combo, strict=True)))
        assert parse(format(mf)) == mf


def test_round_trip_over_parsed_examples() -> None:
    for text in (FULL, 'FROM "./my model.gguf"\nSYSTEM "  x  "\n', "FROM m\nMESSAGE system be brief\n"):
        mf = parse(text)
        assert parse(format(mf)) == mf
        assert format(parse(format(mf))) == format(mf)


def test_format_refuses_what_no_quoting_holds() -> None:
    with pytest.raises(ValueError, match="cannot be written in a Modelfile"):
        format(Modelfile(from_="m", system='a"""\nb'))
    with pytest.raises(ValueError, match="carriage return"):
        format(Modelfile(from_="m", system="a\rb"))


# -- /api/create ------------------------------------------------------------------------------------------


def test_to_create_request_from_a_model() -> None:
    body = to_create_request(parse(FULL.replace("ADAPTER ./lora.gguf\n", "")), model="mine:v1")
    assert body == {
        "model": "mine:v1",
        "from": "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0",
        "template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        "system": "You are a helpful assistant.",
        "parameters": {
            "temperature": 0.2,
            "num_ctx": 4096,
            "stop": ["<|im_end|>", "<|endoftext|>"],
            "use_mmap": False,
        },
        "messages": [{"role": "user", "content": "Is the sky blue?"}, {"role": "assistant", "content": "Yes."}],
        "license": ["Apache License\nVersion 2.0", "MIT"],
        "stream": True,
    }


def test_to_create_request_with_uploaded_files() -> None:
    digest = "sha256:" + "ab" * 32
    body = to_create_request(
        parse("FROM ./model.gguf\nADAPTER ./lora.gguf\n"),
        model="m",
        files={"model.gguf": digest},
        adapters={"lora.gguf": digest},
    )
    assert body == {"model": "m", "files": {"model.gguf": digest}, "adapters": {"lora.gguf": digest}, "stream": True}


def test_to_create_request_needs_the_adapters_uploaded() -> None:
    with pytest.raises(ValueError, match="ADAPTER"):
        to_create_request(parse("FROM m\nADAPTER ./lora.gguf\n"), model="x")


def test_to_create_request_keeps_an_empty_system() -> None:
    body = to_create_request(parse('FROM m\nSYSTEM ""\n'), model="x")
    assert body == {"model": "x", "from": "m", "system": "", "stream": True}
