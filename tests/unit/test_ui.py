"""The web page's serving (server/ui.py) over the app with a scripted runner, the files' hygiene, and `localllm ui`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from localllm.client import Client
from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.modelstore.store import Store
from localllm.scheduling.scheduler import Scheduler
from localllm.server import ui
from localllm.server.app import create_app
from localllm.service.core import Service
from localllm_cli.main import cli
from localllm_cli.ui import page_url

from ..fakes import FakeFactory

ROOT = Path(__file__).resolve().parents[2]


def app_client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:
    config = Settings(host=parse_host(""), models_dir=tmp_path / "models", **settings)  # type: ignore[arg-type]
    service = Service(config, Store(config.models_dir), Scheduler(factory=FakeFactory()))
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from app_client(tmp_path)


def test_the_page_and_its_files_are_served_with_the_policy(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == ui.CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in ui.CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in ui.CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    for name in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
        file = client.get(f"/ui/{name}")
        assert file.status_code == 200, name
        assert file.headers["content-security-policy"] == ui.CONTENT_SECURITY_POLICY
    assert client.get("/ui/app.js").headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert client.get("/ui/app.css").headers["content-type"].startswith("text/css")


def test_root_still_answers_ollama_clients_and_ui_redirects(client: TestClient) -> None:
    assert client.get("/").text == "localllm is running"
    moved = client.get("/ui", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "ui/"
    assert client.get("/ui").url.path == "/ui/"


def test_only_the_page_files_are_served(client: TestClient) -> None:
    assert client.get("/ui/missing.js").status_code == 404
    assert client.get("/ui/../pyproject.toml").status_code == 404
    assert client.get("/ui/%2e%2e/ui.py").status_code == 404
    assert client.post("/ui/", json={}).status_code == 405


def test_with_keys_on_the_page_loads_without_one_but_the_api_does_not(tmp_path: Path) -> None:
    for client in app_client(tmp_path, api_keys=("secret-secret-secret",)):
        assert client.get("/ui/").status_code == 200
        assert client.get("/ui/chat.js").status_code == 200
        assert client.get("/api/tags").status_code == 401
        assert client.get("/ui/../api/tags").status_code in {401, 404}, "no way around the key through /ui/"
        assert client.post("/ui/app.js").status_code == 401, "only GET and HEAD are open"
        assert client.get("/api/tags", headers={"Authorization": "Bearer secret-secret-secret"}).status_code == 200


def test_the_page_has_no_inline_code_and_never_parses_html() -> None:
    html = (ui.FILES / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "every script is a file (CSP: script-src 'self')"
    assert not re.search(r"\sstyle=|<style", html), "no inline style (CSP: style-src 'self')"
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert not re.search(r"https?://", html), "nothing from another origin"
    for js in ui.FILES.glob("*.js"):
        text = re.sub(r"^\s*//.*$", "", js.read_text(), flags=re.M)  # code, not comments
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{js.name} uses {sink}"
        assert not re.search(r"""(?:import|from)\s*\(?\s*["'](?!\./)""", text), f"{js.name} imports from elsewhere"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434/ui/"),
        ("http://0.0.0.0:8080", "http://127.0.0.1:8080/ui/"),
        ("http://[::]:11434", "http://[::1]:11434/ui/"),
        ("https://llm.example.org:443", "https://llm.example.org:443/ui/"),
    ],
)
def test_page_url(base: str, url: str) -> None:
    assert page_url(base) == url


def test_ui_command_prints_the_address_and_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def open_browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr("webbrowser.open", open_browser)
    up = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, text="localllm is running")))
    client = Client("127.0.0.1:5000", http=up)
    result = CliRunner().invoke(cli, ["ui"], obj=client, catch_exceptions=False)
    assert result.exit_code == 0 and result.output == "http://127.0.0.1:5000/ui/\n" and opened == []
    result = CliRunner().invoke(cli, ["ui", "--open"], obj=client, catch_exceptions=False)
    assert result.exit_code == 0 and opened == ["http://127.0.0.1:5000/ui/"]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    down = Client("127.0.0.1:5000", http=httpx.Client(transport=httpx.MockTransport(refuse)))
    result = CliRunner().invoke(cli, ["ui", "--open"], obj=down)
    assert result.exit_code == 1 and "not running" in result.output and len(opened) == 1
