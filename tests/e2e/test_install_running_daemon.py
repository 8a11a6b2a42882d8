"""install.sh and a daemon that runs from the environment it replaces (issue 18, items 2 and 4).

install.sh runs for real (its `main`), in a temporary prefix, with a stand-in `systemctl` on PATH; only the
slow steps that do not matter here (creating the venv, pip) are replaced by stubs that log their call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "install.sh"
BASH = shutil.which("bash") or "/bin/bash"

# A systemctl that keeps the state of one unit in files: `active` holds the MainPID while it runs.
FAKE_SYSTEMCTL = """#!/usr/bin/env bash
state=$FAKE_SYSTEMD_STATE
echo "systemctl $*" >>"$state/log"
[ "$1" = --user ] && shift
case "$1" in
    show-environment|daemon-reload|enable|disable) exit 0 ;;
    is-active) [ -f "$state/active" ] ;;
    show) cat "$state/active" 2>/dev/null || echo 0 ;;
    stop) rm -f "$state/active" ;;
    start|restart) echo 4242 >"$state/active" ;;
    *) exit 0 ;;
esac
"""

STUBS = """
check_python() { :; }
make_venv() { echo "make_venv" >>"$FAKE_SYSTEMD_STATE/log"; mkdir -p "$PREFIX/bin"; touch "$PREFIX/pyvenv.cfg"; }
install_package() { echo "install_package" >>"$FAKE_SYSTEMD_STATE/log"; ACCEL_INSTALLED=cpu; }
summary() { echo "summary"; }
systemd_running() { systemctl ${1:+"$1"} show-environment >/dev/null 2>&1; }
unit_location() { UNIT_FILE=$FAKE_UNIT_FILE; SCOPE=""; }
"""


def functions() -> str:
    return SCRIPT.read_text().rstrip().removesuffix('main "$@"')


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "systemd"
    state.mkdir()
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_SYSTEMD_STATE": str(state),
        "FAKE_UNIT_FILE": str(tmp_path / "unit" / "localllm.service"),
        "HOME": str(tmp_path / "home"),
    }


def main(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = f'{functions()}\n{STUBS}\nmain "$@"\n'
    return subprocess.run(
        [BASH, "-c", script, "install.sh", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def daemon_from(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process that looks like `localllm serve` started from the prefix (its argv[0] is the venv's Python)."""
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").touch()
    proc = subprocess.Popen(
        [
            BASH,
            "-c",
            'exec -a "$0" "$1" -c "import time; time.sleep(60)" "$2" serve',
            f"{prefix}/bin/python",
            sys.executable,
            f"{prefix}/bin/localllm",
        ]
    )
    try:
        yield prefix, proc
    finally:
        proc.kill()
        proc.wait()


def log(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_SYSTEMD_STATE"], "log")
    return path.read_text().splitlines() if path.exists() else []


def write_unit(env: dict[str, str], prefix: Path, main_pid: int) -> None:
    unit = Path(env["FAKE_UNIT_FILE"])
    unit.parent.mkdir(parents=True)
    unit.write_text(f"[Service]\nExecStart={prefix}/bin/localllm serve\n")
    Path(env["FAKE_SYSTEMD_STATE"], "active").write_text(f"{main_pid}\n")


def test_the_service_running_from_the_prefix_is_stopped_then_started_again(
    world: dict[str, str], daemon_from: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    prefix, service_daemon = daemon_from
    write_unit(world, prefix, service_daemon.pid)
    result = main(world, "--prefix", str(prefix), "--no-link")
    assert result.returncode == 0, result.stderr
    assert "Stopping the localllm service while its environment" in result.stdout
    calls = log(world)
    assert calls.index("systemctl stop localllm") < calls.index("make_venv") < calls.index("install_package")
    assert calls.index("install_package") < calls.index("systemctl start localllm")
    assert "Starting the localllm service again" in result.stdout


def test_a_daemon_started_by_hand_from_the_prefix_stops_the_install(
    world: dict[str, str], daemon_from: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    prefix, by_hand = daemon_from
    result = main(world, "--prefix", str(prefix), "--no-link", "--service")
    assert result.returncode == 1
    assert f"a localllm daemon is running from {prefix} (pid {by_hand.pid})" in result.stderr
    assert f"kill {by_hand.pid}" in result.stderr
    assert "make_venv" not in log(world)
    assert by_hand.poll() is None, "install.sh must not kill a daemon it did not start"


def test_uninstall_refuses_under_a_daemon_started_by_hand(
    world: dict[str, str], daemon_from: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    prefix, by_hand = daemon_from
    result = main(world, "--uninstall", "--prefix", str(prefix), "--no-link")
    assert result.returncode == 1
    assert f"(pid {by_hand.pid})" in result.stderr
    assert (prefix / "pyvenv.cfg").exists(), "the environment was removed under the daemon"


def test_uninstall_stops_the_service_before_removing_its_environment(
    world: dict[str, str], daemon_from: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    prefix, service_daemon = daemon_from
    write_unit(world, prefix, service_daemon.pid)
    result = main(world, "--uninstall", "--prefix", str(prefix), "--no-link")
    assert result.returncode == 0, result.stderr
    assert "systemctl disable --now localllm" in log(world)
    assert not prefix.exists()


def test_the_user_unit_carries_the_installers_host_and_models(world: dict[str, str], tmp_path: Path) -> None:
    models = tmp_path / "my models"
    env = {
        **world,
        "LOCALLLM_HOST": "0.0.0.0:8080",
        "LOCALLLM_MODELS": str(models),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    script = (
        f"{functions()}\n"
        f"IS_ROOT=0; SRC={ROOT}; PREFIX={tmp_path}/venv; VPY={sys.executable}; HOME={tmp_path}/home\n"
        "unit_location\ninstall_user_service\n"
    )
    result = subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    unit = (tmp_path / "config" / "systemd" / "user" / "localllm.service").read_text().splitlines()
    assert "Wants=network-online.target" in unit and "After=network-online.target" in unit
    assert "Environment=LOCALLLM_HOST=0.0.0.0:8080" in unit
    assert f'Environment="LOCALLLM_MODELS={models}"' in unit
    assert models.is_dir()


def test_the_summary_names_the_address_the_daemon_will_use(tmp_path: Path) -> None:
    env = {**os.environ, "LOCALLLM_HOST": "0.0.0.0:8080"}
    script = (
        f"{functions()}\n"
        f"IS_ROOT=1; SRC={ROOT}; PREFIX={tmp_path}/venv; BIN_DIR={tmp_path}/bin; VPY={sys.executable}\n"
        "LINK=0; DEV=0; SERVICE=0; ACCEL_INSTALLED=cpu\nsummary\n"
    )
    result = subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "The API listens on http://0.0.0.0:8080 " in result.stdout
    assert "127.0.0.1:11434" not in result.stdout
