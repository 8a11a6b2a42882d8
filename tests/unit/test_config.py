from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from localllm.config import VARIABLES, Settings
from localllm.config.values import parse_duration, parse_host
from localllm.domain.errors import ConfigError

from ..conftest import ROOT


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


def test_kv_cache_type() -> None:
    assert Settings.from_env({}).kv_cache_type == "f16"
    for raw, value in (("q8_0", "q8_0"), (" Q4_0 ", "q4_0"), ("F16", "f16"), ("", "f16")):
        assert Settings.from_env({"LOCALLLM_KV_CACHE_TYPE": raw}).kv_cache_type == value
    on = {"LOCALLLM_FLASH_ATTENTION": "on", "LOCALLLM_KV_CACHE_TYPE": "q4_0"}
    assert Settings.from_env(on).kv_cache_type == "q4_0"
    off = {"LOCALLLM_FLASH_ATTENTION": "0", "LOCALLLM_KV_CACHE_TYPE": "f16"}
    assert Settings.from_env(off).kv_cache_type == "f16", "f16 needs no flash attention"


def test_a_quantised_kv_cache_with_flash_attention_off_is_refused_at_start() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"LOCALLLM_FLASH_ATTENTION": "off", "LOCALLLM_KV_CACHE_TYPE": "q8_0"})
    assert "LOCALLLM_KV_CACHE_TYPE='q8_0' needs flash attention" in str(err.value)
    assert "LOCALLLM_FLASH_ATTENTION is off" in str(err.value)


def test_stream_interval() -> None:
    assert Settings.from_env({"LOCALLLM_STREAM_INTERVAL": "0"}).stream_interval == 0
    assert Settings.from_env({"LOCALLLM_STREAM_INTERVAL": "100ms"}).stream_interval == 0.1


def test_prompt_cache() -> None:
    s = Settings.from_env({})
    assert (s.cache_ram, s.cache_dir, s.cache_disk) == (-1, None, 16 << 30), "auto RAM, no disk tier"
    for raw, value in (("0", 0), ("0B", 0), ("auto", -1), ("512MiB", 512 << 20), ("8GiB", 8 << 30), ("1000", 1000)):
        assert Settings.from_env({"LOCALLLM_CACHE_RAM": raw}).cache_ram == value
    s = Settings.from_env({"LOCALLLM_CACHE_DIR": "~/kv", "LOCALLLM_CACHE_DISK": "2GiB"})
    assert s.cache_dir == Path("~/kv").expanduser() and s.cache_disk == 2 << 30


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
        (9_223_372_036, 9_223_372_036),  # Go's longest duration
        (1e18, math.inf),  # longer: forever, as in Ollama
        ("2562048h", math.inf),
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
        ({"LOCALLLM_KV_CACHE_TYPE": "q4_1"}, "LOCALLLM_KV_CACHE_TYPE"),
        ({"LOCALLLM_CACHE_RAM": "lots"}, "LOCALLLM_CACHE_RAM"),
        ({"LOCALLLM_CACHE_RAM": "-5"}, "LOCALLLM_CACHE_RAM"),
        ({"LOCALLLM_CACHE_DISK": "0"}, "LOCALLLM_CACHE_DISK"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_models_dir_expands_user() -> None:
    assert Settings.from_env({"LOCALLLM_MODELS": "~/m"}).models_dir == Path("~/m").expanduser()


def test_replica_name_is_a_header_safe_name() -> None:
    assert Settings.from_env({}).replica == ""
    assert Settings.from_env({"LOCALLLM_REPLICA": " gpu-box.2_a "}).replica == "gpu-box.2_a"
    for bad in ("two words", "a\r\nX-Evil: 1", "x" * 65, "naïve"):
        with pytest.raises(ConfigError, match="LOCALLLM_REPLICA"):
            Settings.from_env({"LOCALLLM_REPLICA": bad})


def test_responses_dir_is_optional_and_expands_user() -> None:
    assert Settings.from_env({}).responses_dir is None
    assert Settings.from_env({"LOCALLLM_RESPONSES_DIR": " "}).responses_dir is None
    assert Settings.from_env({"LOCALLLM_RESPONSES_DIR": "~/r"}).responses_dir == Path("~/r").expanduser()


def readme_table() -> list[tuple[str, str]]:
    """(variable, default cell) of each row of README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `([A-Z_]+)` \|([^|]*)\|", section, re.M)
    return [(name, cell.strip()) for name, cell in rows]


def test_readme_table_is_the_declared_table() -> None:
    declared = [(v.name, f"`{v.shown_default}`" if v.shown_default else "") for v in VARIABLES]
    expected = "\n".join(f"| `{name}` | {default} | …" for name, default in declared)
    assert readme_table() == declared, f"README's configuration table should list, in this order:\n{expected}"


def test_the_declared_defaults_are_the_settings_defaults() -> None:
    """A Settings made in code and one read from an empty environment agree: both take each declared default."""
    from_env = Settings.from_env({"LOCALLLM_MODELS": "/m"})
    assert from_env == dataclasses.replace(Settings(models_dir=Path("/m")), keys_file=Path("/keys.json"))
    daemon = [v for v in VARIABLES if v.parse is not None]
    assert [v.name for v in daemon] == [
        f.metadata["localllm.variable"].name for f in dataclasses.fields(Settings) if f.metadata
    ]
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)
    assert Settings().context_length == 8192 and Settings().max_body == 64 << 20


def test_a_runner_started_without_the_daemon_loads_as_the_daemon_would() -> None:
    """LoadSpec (the runner's boundary imports only domain/) keeps its own defaults: they are the daemon's."""
    from localllm.runner.protocol import LoadSpec

    spec = LoadSpec(model_path="m", n_ctx=1)
    settings = Settings()
    assert (spec.stream_interval, spec.flash_attention, spec.kv_cache_type) == (
        settings.stream_interval,
        settings.flash_attention,
        settings.kv_cache_type,
    )
    assert (spec.cache_ram, spec.cache_disk, spec.n_threads) == (
        settings.cache_ram,
        settings.cache_disk,
        settings.num_threads,
    )
