"""The web chat page (`/ui/`) driven in headless Chromium (Debian's `chromium`, through Playwright) against a
real daemon with the tiny real models: chat, stop, reload, pull, delete, unload, API keys, hostile output.

One browser and one daemon serve the module; the tests run in file order and build on each other (the
conversation of the first is found again after a reload). Every request the page makes, and every console
message, is recorded: none may go to another origin, and the main page logs no error. Screenshots of both
views at 1280×800 and at a phone's 375 px go to tests/.artifacts/ui/ (git-ignored).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import CHAT_REPO, STORIES_REPO
from ..ggufcopy import copy_with_metadata
from ..hubstub import HubStub
from ..media import png
from .conftest import Daemon, daemon_with, start_daemon, stop_daemon

pytestmark = [pytest.mark.model, pytest.mark.e2e]

CHROMIUM = os.environ.get("LOCALLLM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "ui"
STORIES = f"hf.co/{CHAT_REPO}:latest"  # stories260K with a template that passes the user's text through
PAYLOAD = "<img src=x onerror=alert(1)><script>alert(2)</script>"
FAST = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}  # no throttling

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (./install.sh --dev)")
sync_api.expect.set_options(timeout=20_000)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium; .ci/run does) for the browser tests",
        allow_module_level=True,
    )


@dataclass
class Recorder:
    """What a page did: every request's URL, console errors, uncaught exceptions and JS dialogs."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def console(message: Any) -> None:
            if message.type == "error":
                self.errors.append(message.text)

        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

        def dismiss(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", dismiss)


@pytest.fixture(scope="module")
def hostile_gguf(tmp_path_factory: pytest.TempPathFactory, stories_chat_gguf: Path) -> Path:
    """The stories model whose word "Lily" (one token) is spelt as HTML: its greedy story names the girl
    `PAYLOAD`, so the real daemon streams real model output that carries it."""
    from gguf import GGUFReader

    tokens = list(GGUFReader(str(stories_chat_gguf)).fields["tokenizer.ggml.tokens"].contents())
    tokens[tokens.index("▁Lily")] = "▁" + PAYLOAD
    out = tmp_path_factory.mktemp("hostile") / "stories-html.gguf"
    return copy_with_metadata(stories_chat_gguf, out, {"tokenizer.ggml.tokens": tokens})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubStub, hostile_gguf: Path) -> Iterator[Daemon]:
    # One sequence per model: a generation that went on after Stop would hold the only slot.
    tmp = tmp_path_factory.mktemp("ui")
    with daemon_with(tmp, hub, [CHAT_REPO], LOCALLLM_STREAM_INTERVAL="0", LOCALLLM_NUM_PARALLEL="1") as d:
        modelfile = tmp / "Modelfile"
        modelfile.write_text(f"FROM {hostile_gguf}\n")
        made = d.cli("create", "hostile", "-f", str(modelfile))
        assert made.returncode == 0, made.stderr
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def page(browser: Any, daemon: Daemon, recorder: Recorder) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    recorder.attach(page)
    response = page.goto(daemon.url + "/ui/")
    assert response is not None and response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body.ready")
    yield page
    context.close()


def loaded(daemon: Daemon) -> list[str]:
    return [m["name"] for m in httpx.get(daemon.url + "/api/ps").json()["models"]]


def settings(page: Any, **options: str) -> None:
    """Open the settings panel if it is closed and fill in `options` (field id: value)."""
    if page.locator("#settings").is_hidden():
        page.get_by_role("button", name="Settings").click()
    for name, value in options.items():
        page.locator(f"#{name}").fill(value)
        page.locator(f"#{name}").dispatch_event("change")


def last_answer(page: Any) -> Any:
    return page.locator('[data-role="assistant"]').last


def send(page: Any, text: str, *, wait: bool = True) -> Any:
    """Type `text` and press Enter; return the new answer's element, once it is complete when `wait`."""
    answers = page.locator('[data-role="assistant"]')
    before = answers.count()
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")
    sync_api.expect(answers).to_have_count(before + 1)
    if wait:
        sync_api.expect(page.locator("body.generating")).to_have_count(0, timeout=60_000)
    return answers.last


def test_chat_streams_the_story(page: Any, daemon: Daemon) -> None:
    page.get_by_label("Model", exact=True).select_option(STORIES)
    settings(page, temperature="0", num_predict="60", num_ctx="")
    box = page.get_by_label("Message", exact=True)
    box.fill("Once")
    box.press("Shift+Enter")
    box.type(" upon a time")
    assert box.input_value() == "Once\n upon a time", "Shift+Enter is a new line, not a send"
    assert page.locator('[data-role="user"]').count() == 0
    # Watch the answer while it is written: it must grow in several steps before the stream ends.
    page.evaluate(
        """() => {
          window.seen = [];
          new MutationObserver(() => {
            const a = [...document.querySelectorAll('[data-role="assistant"]')].pop();
            if (a && a.classList.contains('streaming'))
              window.seen.push(a.querySelector('.markdown').textContent.length);
          }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    # stories260K writes 60 tokens in a few frames' time; a slow link (Chromium's own throttling, ~3 s for this
    # answer) lets the page show it growing, as a person on a slower model would see it.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {**FAST, "downloadThroughput": 3000})
    try:
        with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
            answer = send(page, "Once upon a time")
    finally:
        cdp.send("Network.emulateNetworkConditions", FAST)
        cdp.detach()
    assert sent.value.post_data_json == {
        "model": STORIES,
        "messages": [{"role": "user", "content": "Once upon a time"}],
        "stream": True,
        "options": {"temperature": 0, "num_predict": 60},
    }
    sync_api.expect(page.locator('[data-role="user"] .plain')).to_have_text(["Once upon a time"])
    text = answer.locator(".markdown").inner_text()
    assert "Lily" in text, text
    partial = {n for n in page.evaluate("window.seen") if 0 < n < len(text)}
    assert len(partial) >= 2, f"the answer did not stream in: lengths seen while streaming {partial}"
    assert box.input_value() == ""


def test_stop_ends_the_generation_on_the_daemon(page: Any, daemon: Daemon) -> None:
    # Without Stop this answer would run for minutes: 30,000 tokens in a 32k context, one slot.
    settings(page, temperature="1", num_predict="30000", num_ctx="32768")
    answer = send(page, "Once upon a time", wait=False)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-role="assistant"]')].pop().textContent.length > 300"""
    )
    assert STORIES in loaded(daemon)
    page.get_by_role("button", name="Stop").click()
    sync_api.expect(answer.locator(".note.stopped")).to_have_text("Stopped.")
    sync_api.expect(page.get_by_role("button", name="Send")).to_be_enabled()
    # Unload: the daemon unloads a model at once when no request uses it, and only then.
    httpx.post(daemon.url + "/api/generate", json={"model": STORIES, "keep_alive": 0}, timeout=30)
    deadline = time.monotonic() + 10
    while STORIES in loaded(daemon) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert STORIES not in loaded(daemon), "the stopped request still holds the model: generation went on"
    settings(page, temperature="0", num_predict="60", num_ctx="")


def test_a_reload_finds_the_conversation_again(page: Any) -> None:
    page.reload()
    page.wait_for_selector("body.ready")
    page.get_by_role("button", name="New chat").click()
    sync_api.expect(page.locator("[data-role]")).to_have_count(0)
    page.locator("#conversations .open", has_text="Once upon a time").first.click()
    sync_api.expect(page.locator('[data-role="user"]')).to_have_count(2)
    assert "Lily" in page.locator('[data-role="assistant"]').first.inner_text()
    sync_api.expect(last_answer(page).locator(".note.stopped")).to_have_text("Stopped.")
    assert page.get_by_label("Model", exact=True).input_value() == STORIES


def test_model_output_cannot_inject_html(page: Any, recorder: Recorder) -> None:
    page.get_by_role("button", name="New chat").click()
    page.get_by_label("Model", exact=True).select_option("hostile:latest")
    settings(page, temperature="0", num_predict="60", num_ctx="")
    answer = send(page, "Once upon a time")
    assert PAYLOAD in answer.inner_text(), "the model's answer carries the HTML, shown as text"
    assert page.locator("img").count() == 0
    assert page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == ["app.js"]
    page.wait_for_timeout(300)  # an onerror handler would have run by now
    assert recorder.dialogs == []


def test_pull_shows_progress_then_delete(page: Any, daemon: Daemon) -> None:
    page.get_by_role("link", name="Models").click()
    sync_api.expect(page.locator("#model-list .card")).to_have_count(2)
    page.evaluate(
        """() => {
          window.progress = [];
          const bar = document.getElementById('pull-progress');
          new MutationObserver(() => window.progress.push(bar.value)).observe(bar, {attributes: true});
        }"""
    )
    name = f"hf.co/{STORIES_REPO}"
    page.get_by_label("Model name", exact=True).fill(name)
    page.get_by_role("button", name="Pull").click()
    sync_api.expect(page.locator("#pull-text")).to_contain_text("done (100%)", timeout=60_000)
    assert page.locator("#pull-progress").evaluate("b => b.value") == 100
    assert max(page.evaluate("window.progress")) == 100
    card = page.locator("#model-list .card", has_text=STORIES_REPO)
    sync_api.expect(card).to_contain_text("MB")
    sync_api.expect(card).to_contain_text("llama")
    assert any(m["name"].startswith(name) for m in httpx.get(daemon.url + "/api/tags").json()["models"])
    # The chat's model picker follows.
    assert page.locator("#model option", has_text=STORIES_REPO).count() == 1

    card.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm-delete")
    sync_api.expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    sync_api.expect(card).to_have_count(1)
    card.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    sync_api.expect(card).to_have_count(0)
    assert not any(m["name"].startswith(name) for m in httpx.get(daemon.url + "/api/tags").json()["models"])


def test_loaded_models_are_listed_and_unloaded(page: Any, daemon: Daemon) -> None:
    assert "hostile:latest" in loaded(daemon)
    page.get_by_role("button", name="Refresh").click()
    row = page.locator("#loaded-list .card", has_text="hostile:latest")
    sync_api.expect(row).to_contain_text("CPU")
    row.get_by_role("button", name="Unload").click()
    sync_api.expect(row).to_have_count(0)
    assert "hostile:latest" not in loaded(daemon)


def test_screenshots_at_desktop_and_phone_width(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(page.url.split("#")[0] + "#chat")
    # Both conversations start with "Once upon a time"; the older (last listed) is the stories model's.
    page.locator("#conversations .open", has_text="Once upon a time").last.click()
    if page.locator("#settings").is_visible():
        page.get_by_role("button", name="Settings").click()
    for width, height, label in ((1280, 800, "desktop"), (375, 740, "phone")):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(page.url.split("#")[0] + "#chat")
        sync_api.expect(page.locator('[data-role="assistant"]').first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / f"chat-{label}.png"))
        page.get_by_role("link", name="Models").click()
        sync_api.expect(page.locator("#model-list .card").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / f"models-{label}.png"))
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "nothing wider than the screen"
    # On the phone the conversations are a drawer behind the ☰ button.
    page.get_by_role("link", name="Chat").click()
    sidebar = page.locator("#sidebar")
    assert not sidebar.evaluate("s => s.getBoundingClientRect().right > 0"), "the drawer starts closed"
    page.get_by_role("button", name="Conversations").click()
    sync_api.expect(page.get_by_role("button", name="New chat")).to_be_in_viewport()
    page.wait_for_timeout(300)  # the drawer's slide
    page.screenshot(path=str(ARTIFACTS / "chat-phone-conversations.png"))
    page.locator("#conversations .open").last.click()
    sync_api.expect(page.get_by_role("button", name="New chat")).not_to_be_in_viewport()
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS / "chat-desktop-dark.png"))
    page.emulate_media(color_scheme="light")
    assert (ARTIFACTS / "chat-phone.png").stat().st_size > 5_000


def test_no_console_errors_and_no_other_origin(recorder: Recorder, daemon: Daemon) -> None:
    assert recorder.errors == []
    assert recorder.requests, "the page made requests"
    foreign = [url for url in recorder.requests if not url.startswith(daemon.url + "/")]
    assert foreign == []


def store_conversation(page: Any, conversation: dict[str, Any]) -> None:
    """Make `conversation` the browser's only one and reload the page to show it."""
    page.evaluate(
        """c => {
          localStorage.setItem('localllm.conversations', JSON.stringify([{system: '', options: {}, ...c,
            updated: Date.now()}]));
          localStorage.setItem('localllm.current', c.id);
        }""",
        conversation,
    )
    page.reload()
    page.wait_for_selector("body.ready")


def test_errors_are_shown_in_words(browser: Any, daemon: Daemon) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(daemon.url + "/ui/")
    page.wait_for_selector("body.ready")
    store_conversation(page, {"id": "gone", "title": "gone", "model": "gone:latest", "messages": []})
    assert page.get_by_label("Model", exact=True).input_value() == "gone:latest"
    settings(page, system="Answer in French.")
    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
        alert = send(page, "hello").get_by_role("alert")
    assert sent.value.post_data_json["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hello"},
    ]
    sync_api.expect(alert).to_contain_text("gone")
    sync_api.expect(alert).to_contain_text("not found")
    context.close()


def test_markdown_code_copy_and_thinking(browser: Any, daemon: Daemon) -> None:
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(daemon.url + "/ui/")
    page.wait_for_selector("body.ready")
    answer = "Use **pip**, then *run*:\n\n```sh\npip install x <y>\n```\n\n- one `a<b`\n- two"
    messages = [
        {"role": "user", "content": "how?"},
        {"role": "assistant", "content": answer, "thinking": "They want steps.", "model": STORIES},
    ]
    store_conversation(page, {"id": "md", "title": "md", "model": STORIES, "messages": messages})
    body = page.locator('[data-role="assistant"] .markdown')
    assert body.locator("strong").inner_text() == "pip" and body.locator("em").inner_text() == "run"
    assert body.locator("pre code").inner_text() == "pip install x <y>"
    assert body.locator("li").all_inner_texts() == ["one a<b", "two"]
    thinking = page.locator('[data-role="assistant"] details.thinking')
    assert thinking.evaluate("d => d.open") is False, "thinking is folded"
    sync_api.expect(thinking.locator(".thinking-text")).to_have_text("They want steps.")
    thinking.locator("summary").click()
    sync_api.expect(thinking.locator(".thinking-text")).to_be_visible()
    page.get_by_role("button", name="Copy").click()
    sync_api.expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "pip install x <y>"
    context.close()


def test_with_api_keys_the_page_asks_once(browser: Any, hub: HubStub, tmp_path: Path) -> None:
    keyed = start_daemon(tmp_path, hub, LOCALLLM_API_KEYS="sk-page-0123456789")
    try:
        context = browser.new_context()
        page = context.new_page()
        seen: list[str | None] = []

        def record(request: Any) -> None:
            if "/api/" in request.url:
                seen.append(request.headers.get("authorization"))

        page.on("request", record)
        page.goto(keyed.url + "/ui/")
        dialog = page.locator("#key-dialog")
        sync_api.expect(dialog).to_be_visible()
        dialog.get_by_label("API key", exact=True).fill("wrong")
        dialog.get_by_role("button", name="Use this key").click()
        sync_api.expect(dialog).to_contain_text("refused")
        dialog.get_by_label("API key", exact=True).fill("sk-page-0123456789")
        dialog.get_by_label("API key", exact=True).press("Enter")
        page.wait_for_selector("body.ready")
        sync_api.expect(dialog).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('localllm.apiKey')") == "sk-page-0123456789"
        page.reload()
        page.wait_for_selector("body.ready")
        sync_api.expect(dialog).to_be_hidden()
        assert seen[-1] == "Bearer sk-page-0123456789" and seen.count("Bearer sk-page-0123456789") >= 2
        # The daemon goes away: the page says so in words.
        store_conversation(page, {"id": "x", "title": "x", "model": "any:latest", "messages": []})
        stop_daemon(keyed)
        sync_api.expect(send(page, "hello").get_by_role("alert")).to_contain_text("Cannot reach the localllm daemon")
        context.close()
    finally:
        stop_daemon(keyed)


# -- images ----------------------------------------------------------------------------------------------------

ONE, TWO, THREE, FOUR = (png(16, 16, seed) for seed in range(1, 5))
# Give an element an image file as a person pasting it (Ctrl+V) or dropping it would.
GIVE = """(el, {kind, name, data}) => {
  const files = new DataTransfer();
  files.items.add(new File([Uint8Array.from(atob(data), c => c.charCodeAt(0))], name, {type: 'image/png'}));
  const init = {bubbles: true, cancelable: true};
  el.dispatchEvent(kind === 'paste' ? new ClipboardEvent('paste', {...init, clipboardData: files})
                                    : new DragEvent('drop', {...init, dataTransfer: files}));
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refusal(text: str) -> bool:
    """Whether an error shown is the daemon's refusal of images for a text-only model."""
    return "vision" in text.lower() or "image" in text.lower()


def new_page(browser: Any, daemon: Daemon) -> tuple[Any, Any, Recorder]:
    context = browser.new_context()
    page = context.new_page()
    recorder = Recorder()
    recorder.attach(page)
    page.goto(daemon.url + "/ui/")
    page.wait_for_selector("body.ready")
    return context, page, recorder


def test_an_image_is_attached_sent_and_refused_by_a_text_model(browser: Any, daemon: Daemon) -> None:
    context, page, recorder = new_page(browser, daemon)
    store_conversation(page, {"id": "img", "title": "img", "model": STORIES, "messages": []})
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach images").click()
    chooser.value.set_files([{"name": "photo.png", "mimeType": "image/png", "buffer": ONE}])
    waiting = page.locator("#attachments img")
    sync_api.expect(waiting).to_have_count(1)
    sync_api.expect(waiting).to_have_attribute("alt", "photo.png")
    assert waiting.evaluate("i => i.complete && i.naturalWidth") == 16, "the thumbnail shows the PNG"

    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
        alert = send(page, "What is in this picture?").get_by_role("alert")
    assert sent.value.post_data_json["messages"] == [
        {"role": "user", "content": "What is in this picture?", "images": [b64(ONE)]}
    ]
    sync_api.expect(alert).to_be_visible()
    assert refusal(alert.inner_text()), alert.inner_text()  # the daemon's own words, not swallowed
    sync_api.expect(page.locator("#attachments")).to_be_hidden()
    shown = page.locator('[data-role="user"] .images img')
    sync_api.expect(shown).to_have_count(1)
    assert shown.get_attribute("src") == "data:image/png;base64," + b64(ONE)
    assert shown.evaluate("i => i.complete && i.naturalWidth") == 16

    # The refused turn is not sent again: the next one is answered.
    settings(page, temperature="0", num_predict="20")
    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as again:
        answer = send(page, "Once upon a time")
    assert again.value.post_data_json["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert answer.locator(".markdown").inner_text().strip()
    assert answer.get_by_role("alert").count() == 0

    # The image is kept with the conversation.
    page.reload()
    page.wait_for_selector("body.ready")
    sync_api.expect(page.locator('[data-role="user"] .images img')).to_have_count(1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-image-desktop.png"))
    assert [e for e in recorder.errors if not e.startswith("Failed to load resource")] == []
    context.close()


def test_pasted_picked_and_dropped_images_and_the_history_resent(browser: Any, daemon: Daemon) -> None:
    context, page, recorder = new_page(browser, daemon)
    earlier = [
        {"role": "user", "content": "look", "images": [b64(ONE)]},
        {"role": "assistant", "content": "A picture.", "model": STORIES},
    ]
    store_conversation(page, {"id": "hist", "title": "hist", "model": STORIES, "messages": earlier})
    sync_api.expect(page.locator('[data-role="user"] .images img')).to_have_count(1)

    page.get_by_label("Message", exact=True).evaluate(GIVE, {"kind": "paste", "name": "pasted.png", "data": b64(THREE)})
    waiting = page.locator("#attachments img")
    sync_api.expect(waiting).to_have_count(1)
    sync_api.expect(waiting).to_have_attribute("alt", "pasted.png")
    page.locator("#attach-input").set_input_files([{"name": "picked.png", "mimeType": "image/png", "buffer": TWO}])
    sync_api.expect(waiting).to_have_count(2)
    page.get_by_role("button", name="Remove pasted.png").click()
    sync_api.expect(waiting).to_have_count(1)
    sync_api.expect(waiting).to_have_attribute("alt", "picked.png")

    page.locator("#composer").evaluate(GIVE, {"kind": "drop", "name": "dropped.png", "data": b64(FOUR)})
    sync_api.expect(waiting).to_have_count(2)
    assert waiting.evaluate_all("all => all.map(i => i.alt)") == ["picked.png", "dropped.png"]

    page.locator("#attach-input").set_input_files([{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
    sync_api.expect(page.locator("#notice")).to_contain_text("notes.txt is not an image")
    sync_api.expect(waiting).to_have_count(2)

    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
        alert = send(page, "and these?").get_by_role("alert")
    assert sent.value.post_data_json["messages"] == [
        {"role": "user", "content": "look", "images": [b64(ONE)]},
        {"role": "assistant", "content": "A picture."},
        {"role": "user", "content": "and these?", "images": [b64(TWO), b64(FOUR)]},
    ]
    sync_api.expect(alert).to_be_visible()
    assert refusal(alert.inner_text()), alert.inner_text()
    assert [e for e in recorder.errors if not e.startswith("Failed to load resource")] == []
    context.close()
