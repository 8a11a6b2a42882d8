"""Files named in a `localllm run` prompt: which stretches are paths (Ollama's rule), what is read, what the text
keeps, and what `run` and the REPL send (base64 in Ollama's `images`) or say when a file cannot be sent."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from localllm_cli import attachments
from localllm_cli.attachments import AttachmentError, attach, file_names, unescape
from localllm_cli.repl import names_a_file

from ..media import png, wav
from .test_cli import FakeDaemon, invoke
from .test_cli import daemon as daemon  # the fixture
from .test_cli import tty_stdin as tty_stdin  # the fixture

PNG = png(8, 8)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding cat.png, my cat.png and talk.wav (real files), the current directory."""
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "my cat.png").write_bytes(PNG)
    (tmp_path / "talk.wav").write_bytes(wav(0.25))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- which stretches of a prompt are paths ------------------------------------------------------------------


def test_paths_are_found_by_their_shape() -> None:
    text = (
        "see ./one.png and /abs/two.JPG, /with space/three.jpeg; ./esc\\ aped/four.webp\n"
        "C:\\Users\\me\\five.PNG then d:/x/six.jpg ~/seven.png and ./talk.wav /a/b.MP3 ./c.flac"
    )
    assert file_names(text) == [
        "./one.png",
        "/abs/two.JPG",
        "/with space/three.jpeg",
        "./esc\\ aped/four.webp",
        "C:\\Users\\me\\five.PNG",
        "d:/x/six.jpg",
        "~/seven.png",
        "./talk.wav",
        "/a/b.MP3",
        "./c.flac",
    ]


def test_what_is_not_a_path() -> None:
    assert file_names("cat.png ./drawing.svg ./notes.txt ./a.pngx") == []
    # A relative path without ./ is read from its first slash, as Ollama reads it: mostly no file at all.
    assert file_names("pictures/cat.png") == ["/cat.png"]


def test_the_extension_ends_a_word() -> None:
    assert file_names("look at ./cat.png, then ./dog.png.") == ["./cat.png", "./dog.png"]


def test_shell_escapes_are_undone() -> None:
    assert unescape("./my\\ cat\\ \\(1\\).png") == "./my cat (1).png"
    assert unescape("/x/it'\\''s\\&\\;\\$\\~\\*\\?\\[\\]\\{\\}\\\\.png") == "/x/it's&;$~*?[]{}\\.png"


# -- what is attached, and what the text keeps --------------------------------------------------------------


def test_a_file_is_attached_and_taken_out_of_the_text(here: Path) -> None:
    text, files = attach("what is in ./cat.png")
    assert text == "what is in"
    assert [(f.kind, f.path, f.data) for f in files] == [("image", "./cat.png", PNG)]
    assert files[0].base64 == b64(PNG)


def test_paths_with_spaces_escaped_quoted_or_absolute(here: Path) -> None:
    text, files = attach("compare ./my\\ cat.png with '" + str(here / "my cat.png") + "' please")
    assert text == "compare  with  please"  # Ollama's rule: the path goes, the spaces around it stay
    assert [f.path for f in files] == ["./my cat.png", str(here / "my cat.png")]


def test_audio_files_are_attached_as_audio(here: Path) -> None:
    text, files = attach("transcribe ./talk.wav")
    assert text == "transcribe"
    assert [(f.kind, f.path) for f in files] == [("audio", "./talk.wav")]
    assert files[0].data.startswith(b"RIFF")


def test_a_path_to_nothing_stays_in_the_text(here: Path) -> None:
    assert attach("what is in ./dog.png and ./cat.png") == ("what is in ./dog.png and", attach("./cat.png")[1])
    assert attach("/nowhere/x.png") == ("/nowhere/x.png", [])


def test_home_is_expanded(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(here))
    text, files = attach("~/cat.png what?")
    assert text == "what?" and [f.path for f in files] == ["~/cat.png"] and files[0].data == PNG


def test_a_file_that_is_not_what_its_name_says_is_an_error(here: Path) -> None:
    (here / "fake.png").write_text("hello")
    with pytest.raises(AttachmentError, match=r"couldn't read image './fake.png': .*not a JPEG, PNG or WebP"):
        attach("what is ./fake.png")
    (here / "pic.wav").write_bytes(PNG)
    with pytest.raises(AttachmentError, match=r"couldn't read audio './pic.wav': .*not WAV, MP3 or FLAC"):
        attach("hear ./pic.wav")
    (here / "empty.jpg").write_bytes(b"")
    with pytest.raises(AttachmentError, match="empty.jpg"):
        attach("./empty.jpg")


def test_an_unreadable_file_is_an_error(here: Path) -> None:
    (here / "folder.png").mkdir()
    with pytest.raises(AttachmentError, match=r"couldn't read image './folder.png': Is a directory"):
        attach("./folder.png")


def test_a_file_over_the_limit_is_an_error(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attachments, "ATTACHMENT_MAX_BYTES", len(PNG) - 1)
    with pytest.raises(AttachmentError, match=rf"{len(PNG)} bytes is over the limit of {len(PNG) - 1}"):
        attach("./cat.png")


def test_a_repl_line_starting_with_a_path_is_a_message(here: Path) -> None:
    assert names_a_file(str(here / "cat.png") + " what is it?")
    assert names_a_file("/nowhere/cat.png")  # a path all the same: its text is sent as typed
    assert not names_a_file("/set parameter stop /tmp/a.png")
    assert not names_a_file("/nope")


# -- run and the REPL send them ----------------------------------------------------------------------------


def test_run_sends_the_image_as_base64_and_says_so(daemon: FakeDaemon, here: Path) -> None:
    result = invoke(daemon, ["run", "qwen", "what is in ./cat.png"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "Added image './cat.png'\n"
    (body,) = daemon.bodies("/api/generate")
    assert body == {"model": "qwen", "prompt": "what is in", "stream": True, "images": [b64(PNG)]}


def test_run_attaches_from_several_arguments_and_piped_text(daemon: FakeDaemon, here: Path) -> None:
    result = invoke(daemon, ["run", "qwen", "compare", "./cat.png", "./talk.wav"], input="notes")
    assert result.exit_code == 0, result.output
    assert result.stderr == "Added image './cat.png'\nAdded audio './talk.wav'\n"
    (body,) = daemon.bodies("/api/generate")
    assert body["prompt"] == "notes compare" and body["images"] == [b64(PNG), b64(wav(0.25))]


def test_run_with_a_file_it_cannot_send_sends_nothing(daemon: FakeDaemon, here: Path) -> None:
    (here / "notes.png").write_text("not a picture")
    result = invoke(daemon, ["run", "qwen", "what is in ./notes.png"])
    assert result.exit_code == 1
    assert result.stderr == "Error: couldn't read image './notes.png': the file is not a JPEG, PNG or WebP image\n"
    assert daemon.bodies("/api/generate") == []


def test_run_prints_the_daemons_refusal_and_fails(daemon: FakeDaemon, here: Path) -> None:
    refusal = "this model has no vision support: images cannot be used"
    daemon.route_api_generate = lambda body: httpx.Response(400, json={"error": refusal})  # type: ignore[method-assign]
    result = invoke(daemon, ["run", "qwen", "what is in ./cat.png"])
    assert result.exit_code == 1
    assert result.stderr == f"Added image './cat.png'\nError: {refusal}\n"


def test_repl_attaches_files_and_keeps_them_in_the_history(
    daemon: FakeDaemon,
    tty_stdin: None,
    here: Path,
) -> None:
    absolute = str(here / "cat.png")
    result = invoke(daemon, ["run", "smollm2:135m"], input=f"{absolute} what is it?\nand ./talk.wav\n/bye\n")
    assert result.exit_code == 0, result.output
    assert "Unknown command" not in result.stdout
    assert result.stderr == f"Added image '{absolute}'\nAdded audio './talk.wav'\n"
    chats = daemon.bodies("/api/chat")
    assert chats[2]["messages"] == [
        {"role": "user", "content": "what is it?", "images": [b64(PNG)]},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "and", "images": [b64(wav(0.25))]},
    ]


def test_repl_says_what_it_cannot_send_and_goes_on(
    daemon: FakeDaemon,
    tty_stdin: None,
    here: Path,
) -> None:
    (here / "folder.jpg").mkdir()
    result = invoke(daemon, ["run", "smollm2:135m"], input="look at ./folder.jpg\nhello\n")
    assert result.exit_code == 0, result.output
    assert "Error: couldn't read image './folder.jpg': Is a directory" in result.stderr
    chats = daemon.bodies("/api/chat")
    assert [c["messages"] for c in chats[1:]] == [[{"role": "user", "content": "hello"}]]
