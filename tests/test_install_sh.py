"""install.sh: its interface, checked without installing anything (CI runs the real install)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "install.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_syntax() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_help_lists_every_option() -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in ("--prefix", "--bin-dir", "--no-link", "--dev", "--cpu", "--cuda", "--service", "--python"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"), [(("--bogus",), "unknown option: --bogus"), (("--prefix",), "--prefix needs a directory")]
)
def test_bad_arguments_fail_clearly(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_missing_python_is_named() -> None:
    result = run("--python", "/nonexistent/python3", "--no-link")
    assert result.returncode != 0
    assert "/nonexistent/python3 not found" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean() -> None:
    files = [str(SCRIPT), str(SCRIPT.parent / "scripts" / "test"), str(SCRIPT.parent / ".ci" / "run")]
    result = subprocess.run(["shellcheck", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
