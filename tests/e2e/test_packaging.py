"""The wheel holds the whole program: built from a copy of the checkout as `pip` builds it for a non-editable
install, it has every module under localllm/ and cli/, every Modelfile of the library and every file of the web
page (and, unpacked, its library reads its Modelfiles through importlib.resources), so a new package or folder
cannot go missing from an install while an editable one hides it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..conftest import ROOT

JUNK = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*_cache", ".artifacts", "*.gguf")


def expected(folder: str, installed_as: str, pattern: str) -> set[str]:
    base = ROOT / folder
    return {
        f"{installed_as}/{path.relative_to(base).as_posix()}"
        for path in base.rglob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_module_modelfile_and_web_file(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*JUNK))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    result = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("localllm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    modules = expected("localllm", "localllm", "*.py") | expected("cli", "localllm_cli", "*.py")
    modelfiles = expected("modelfiles", "localllm/modelstore/modelfiles", "*.Modelfile")
    web = expected("localllm/server/ui_static", "localllm/server/ui_static", "*")
    assert len(modelfiles) >= 30 and "localllm/server/ui_static/index.html" in web
    assert {"localllm/py.typed", "localllm/modelstore/modelfiles/__init__.py"} <= names
    assert not modules - names, "modules missing from the wheel"
    assert not modelfiles - names, "Modelfiles missing from the wheel"
    assert not web - names, "web page files missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "localllm = localllm_cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # Installed from the wheel (unpacked ahead of the editable install on the path), the library reads its files.
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    code = "from localllm.modelstore import library; print(library.__file__, len(library.entries()))"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    where, count = out.stdout.split()
    assert Path(where).is_relative_to(installed) and int(count) == len(modelfiles)
