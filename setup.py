"""Which packages the wheel holds; everything else about it is in pyproject.toml.

Every folder under localllm/ is a package of the wheel, found here (those without Python, like the web page's
`server/ui_static/`, carry package data), so a new one cannot go missing from a wheel while an editable install
hides it. Two folders elsewhere in the checkout are mapped in by name, which pyproject.toml's `packages.find`
cannot do (it names a package after its folder): cli/, installed as `localllm_cli`, and modelfiles/ (the model
library), installed as `localllm.modelstore.modelfiles` and read as package data by localllm/modelstore/library.py.
tests/e2e/test_packaging.py builds the wheel and checks that it holds every file.
"""

from setuptools import find_namespace_packages, setup

ROOTS = {"localllm": "localllm", "localllm_cli": "cli", "localllm.modelstore.modelfiles": "modelfiles"}


def packages(name: str, folder: str) -> list[str]:
    """`name` and every folder under `folder` as its subpackages (a folder named like `qwen2.5` is data only)."""
    found = find_namespace_packages(folder, exclude=["__pycache__", "*.__pycache__"])
    return [name, *(f"{name}.{sub}" for sub in found)]


setup(
    packages=[package for name, folder in ROOTS.items() for package in packages(name, folder)],
    package_dir={name: folder for name, folder in ROOTS.items() if name != folder},
)
