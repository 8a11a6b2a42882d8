"""The systemd units install.sh writes (issue 15, part 5): both pass `systemd-analyze verify`, run the daemon
as `Type=notify`, and the system unit is sandboxed (with GPU devices let through when there are any)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "install.sh"
BASH = shutil.which("bash") or "/bin/bash"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is missing (Debian's systemd package)")


def functions() -> str:
    return SCRIPT.read_text().rstrip().removesuffix('main "$@"')


def prefix(tmp_path: Path) -> Path:
    """A stand-in environment: verify wants ExecStart's program to exist."""
    program = tmp_path / "venv" / "bin" / "localllm"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program.parent.parent


def user_unit(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "LOCALLLM_MODELS": str(tmp_path / "models")}
    script = (
        f"{functions()}\nIS_ROOT=0; DEV=0; SRC={ROOT}; PREFIX={prefix(tmp_path)}; VPY={sys.executable}\n"
        "systemd_running() { return 1; }\nunit_location\ninstall_user_service\n"
    )
    done = subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return config / "systemd" / "user" / "localllm.service"


def system_unit(tmp_path: Path, models: str = "/var/lib/localllm/models", gpus: str | None = None) -> Path:
    """The text install_system_service writes (it also creates a user and directories, which a test cannot);
    `gpus` stands in for the GPU device nodes found."""
    fake = "" if gpus is None else f"gpu_devices() {{ printf '%s\\n' {gpus}; }}\n"
    script = (
        f"{functions()}\nIS_ROOT=1; DEV=0; SRC={ROOT}; PREFIX={prefix(tmp_path)}; VPY=/usr/bin/python3\n{fake}"
        + 'unit_text "$(environment_line LOCALLLM_MODELS "$1")\nUser=localllm\nGroup=localllm\n'
        + 'WorkingDirectory=/var/lib/localllm\n$(system_sandbox "$1")\n" multi-user.target\n'
    )
    done = subprocess.run([BASH, "-c", script, "x", models], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "localllm.service"
    unit.write_text(done.stdout)
    return unit


def lines(unit: Path) -> list[str]:
    return unit.read_text().splitlines()


def test_both_units_are_type_notify_and_let_the_daemon_stop_its_runners(tmp_path: Path) -> None:
    for unit in (user_unit(tmp_path / "user"), system_unit(tmp_path / "system")):
        text = lines(unit)
        assert {"Type=notify", "NotifyAccess=main", "KillMode=mixed", "TimeoutStopSec=30"} <= set(text)
        assert "LimitNOFILE=65536" in text  # systemd's default 1,024 files: a thousand idle connections
        assert {"NoNewPrivileges=yes", "SystemCallArchitectures=native"} <= set(text)
        assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in text


def test_the_system_unit_is_sandboxed_with_the_store_writable(tmp_path: Path) -> None:
    text = lines(system_unit(tmp_path, "/srv/models"))
    for line in ("ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ProtectKernelTunables=yes"):
        assert line in text
    assert "ReadWritePaths=/var/lib/localllm" in text and "ReadWritePaths=/srv/models" in text
    gpu = any(Path("/dev").glob("nvidia*")) or Path("/dev/kfd").exists() or Path("/dev/dri").exists()
    assert ("PrivateDevices=yes" in text) is not gpu  # hiding /dev would hide the GPU
    assert ("DevicePolicy=closed" in text) is gpu


def test_the_user_unit_has_no_sandbox_that_needs_privileges(tmp_path: Path) -> None:
    """The user unit lives in the home directory and runs there: no ProtectHome, ProtectSystem or devices."""
    text = "\n".join(lines(user_unit(tmp_path)))
    assert "ProtectHome" not in text and "ProtectSystem" not in text and "PrivateDevices" not in text


def test_a_gpu_gets_through_the_system_units_device_policy(tmp_path: Path) -> None:
    text = lines(system_unit(tmp_path, gpus="/dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm /dev/kfd"))
    assert "PrivateDevices=yes" not in text and "DevicePolicy=closed" in text
    for device in ("char-nvidia-frontend", "char-nvidia-uvm", "/dev/kfd"):
        assert f"DeviceAllow={device} rw" in text
    assert "DeviceAllow=char-drm rw" not in text
    none = lines(system_unit(tmp_path / "none", gpus=""))
    assert "PrivateDevices=yes" in none and not any(line.startswith("Device") for line in none)


@needs_analyze
def test_systemd_analyze_verify_passes_on_both_units(tmp_path: Path) -> None:
    assert ANALYZE is not None
    units = (
        (user_unit(tmp_path / "user"), "--user"),
        (system_unit(tmp_path / "system"), "--system"),
        (system_unit(tmp_path / "gpu", gpus="/dev/nvidia0 /dev/nvidiactl /dev/dri"), "--system"),
    )
    for unit, scope in units:
        done = subprocess.run([ANALYZE, scope, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        if scope == "--user" and "Failed to initialize manager" in done.stderr:
            done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "localllm.service" not in done.stderr, done.stderr  # no warning about our unit


@needs_analyze
def test_systemd_analyze_security_rates_the_system_unit_ok(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = system_unit(tmp_path)
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    exposure = float(done.stdout.split("Overall exposure level for localllm.service:")[1].split()[0])
    assert exposure <= 2.0, done.stdout  # 9.2 ("UNSAFE") before the sandbox
