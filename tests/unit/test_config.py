from __future__ import annotations

import math
from pathlib import Path

import pytest

from localllm.config import Settings, parse_duration, parse_host
from localllm.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.host.base_url == "http://127.0.0.1:11434"
    assert s.keep_alive == 300
    assert s.models_dir.name == "models"
    assert s.context_length == 8192
    assert s.stream_interval == 0.025


def test_flash_attention() -> None:
    assert Settings.from_env({}).flash_attention == "auto"
    for raw, value in (("on", "on"), ("1", "on"), ("OFF", "off"), ("0", "off"), ("false", "off"), ("auto", "auto")):
        assert Settings.from_env({"LOCALLLM_FLASH_ATTENTION": raw}).flash_attention == value


def test_stream_interval() -> None:
    assert Settings.from_env({"LOCALLLM_STREAM_INTERVAL": "0"}).stream_interval == 0
    assert Settings.from_env({"LOCALLLM_STREAM_INTERVAL": "100ms"}).stream_interval == 0.1


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("0.0.0.0", "http://0.0.0.0:11434"),
        (":8080", "http://127.0.0.1:8080"),
        ("localhost:9", "http://localhost:9"),
        ("http://example.local", "http://example.local:80"),
        ("https://h:8443/", "https://h:8443"),
        ("[::1]:7000", "http://[::1]:7000"),
    ],
)
def test_host_forms(value: str, url: str) -> None:
    assert parse_host(value).base_url == url


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("10s", 10),
        ("250ms", 0.25),
        ("0", 0),
        ("42", 42),
        (-1, math.inf),
        ("-1", math.inf),
        ("-5m", math.inf),
        (0, 0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, name="keep_alive") == seconds


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LOCALLLM_KEEP_ALIVE": "forever"}, "LOCALLLM_KEEP_ALIVE"),
        ({"LOCALLLM_HOST": "ftp://x"}, "LOCALLLM_HOST"),
        ({"LOCALLLM_HOST": "host:notaport"}, "LOCALLLM_HOST"),
        ({"LOCALLLM_CONTEXT_LENGTH": "big"}, "LOCALLLM_CONTEXT_LENGTH"),
        ({"LOCALLLM_MAX_LOADED_MODELS": "0"}, "LOCALLLM_MAX_LOADED_MODELS"),
        ({"LOCALLLM_DEBUG": "maybe"}, "LOCALLLM_DEBUG"),
        ({"LOCALLLM_DEFAULT_MODEL": "../escape"}, "LOCALLLM_DEFAULT_MODEL"),
        ({"LOCALLLM_STREAM_INTERVAL": "-1"}, "LOCALLLM_STREAM_INTERVAL"),
        ({"LOCALLLM_STREAM_INTERVAL": "1m"}, "LOCALLLM_STREAM_INTERVAL"),
        ({"LOCALLLM_STREAM_INTERVAL": "often"}, "LOCALLLM_STREAM_INTERVAL"),
        ({"LOCALLLM_FLASH_ATTENTION": "fast"}, "LOCALLLM_FLASH_ATTENTION"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_models_dir_expands_user() -> None:
    assert Settings.from_env({"LOCALLLM_MODELS": "~/m"}).models_dir == Path("~/m").expanduser()


def test_responses_dir_is_optional_and_expands_user() -> None:
    assert Settings.from_env({}).responses_dir is None
    assert Settings.from_env({"LOCALLLM_RESPONSES_DIR": " "}).responses_dir is None
    assert Settings.from_env({"LOCALLLM_RESPONSES_DIR": "~/r"}).responses_dir == Path("~/r").expanduser()
