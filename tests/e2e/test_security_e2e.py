"""A trustworthy daemon, end to end: the Host check, CORS, API keys, app tokens and quotas on a real daemon
process, driven by httpx, the openai and ollama packages and the `localllm` CLI (all on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from localllm.auth.keysfile import KeysFile
from localllm.auth.tokens import sign_token

from ..conftest import CHAT_REPO, STORIES_REPO
from ..hubstub import HubStub
from .conftest import Daemon, localllm_command, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STORIES = f"hf.co/{STORIES_REPO}"
CHAT = f"hf.co/{CHAT_REPO}"
ENV_KEY = "env-key-0123456789"
GREEDY = {"temperature": 0, "num_predict": 40}


def cli(daemon: Daemon, *args: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in daemon.env.items() if k != "LOCALLLM_API_KEY"}
    if key is not None:
        env["LOCALLLM_API_KEY"] = key
    return subprocess.run([*localllm_command(), *args], env=env, capture_output=True, text=True, timeout=120)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- network safety (no keys) -------------------------------------------------------------------------------


def test_listens_on_loopback_by_default_and_refuses_foreign_hosts(daemon: Daemon) -> None:
    assert "127.0.0.1" in daemon.env["LOCALLLM_HOST"]
    r = httpx.get(daemon.url + "/api/tags", headers={"Host": "evil.example"})
    assert r.status_code == 403
    assert "evil.example" in r.json()["error"] and "DNS rebinding" in r.json()["error"]
    r = httpx.get(daemon.url + "/v1/models", headers={"Host": "evil.example:11434"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    for host in ("localhost", "localhost:11434", "127.0.0.1", "[::1]:11434"):
        assert httpx.get(daemon.url + "/api/tags", headers={"Host": host}).status_code == 200, host
    assert "WITHOUT API KEYS" not in daemon.log()


def test_cors_for_browsers(daemon: Daemon) -> None:
    r = httpx.get(daemon.url + "/api/tags", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "LOCALLLM_ORIGINS" in r.json()["error"]
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(daemon.url + "/api/tags", headers={"Origin": "http://localhost:5173"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    r = httpx.options(
        daemon.url + "/v1/chat/completions",
        headers={
            "Origin": "http://127.0.0.1:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization,x-stainless-lang",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"]


def test_warns_loudly_when_exposed_without_keys(tmp_path: Path, hub: HubStub) -> None:
    d = start_daemon(tmp_path, hub, bind="0.0.0.0")
    try:
        assert httpx.get(d.url + "/api/version").status_code == 200
        log = d.log()
    finally:
        stop_daemon(d)
    warning = next(line for line in log.splitlines() if "WITHOUT API KEYS" in line)
    assert "WARNING" in warning and "0.0.0.0" in warning and "localllm keys create" in warning


# -- authentication -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, hub: HubStub) -> Iterator[Daemon]:
    """A daemon with a key in LOCALLLM_API_KEYS, 2-second app tokens and an extra origin; models pulled."""
    d = start_daemon(
        tmp_path_factory.mktemp("keyed"),
        hub,
        LOCALLLM_API_KEYS=ENV_KEY,
        LOCALLLM_TOKEN_TTL="2s",
        LOCALLLM_ORIGINS="https://*.example.org",
    )
    try:
        for model in (STORIES, CHAT):
            pulled = cli(d, "pull", model, key=ENV_KEY)
            assert pulled.returncode == 0, pulled.stderr
        yield d
    finally:
        stop_daemon(d)


def test_keys_are_required_except_for_open_endpoints(keyed: Daemon) -> None:
    assert httpx.get(keyed.url + "/api/version").status_code == 200
    assert httpx.get(keyed.url + "/").status_code == 200
    assert httpx.head(keyed.url + "/").status_code == 200
    r = httpx.get(keyed.url + "/api/tags")
    assert r.status_code == 401 and "requires an API key" in r.json()["error"]
    r = httpx.get(keyed.url + "/api/tags", headers=bearer("wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid API key"
    r = httpx.get(keyed.url + "/v1/models", headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(keyed.url + "/api/tags", headers=bearer(ENV_KEY)).status_code == 200
    assert httpx.get(keyed.url + "/api/tags", headers={"x-api-key": ENV_KEY}).status_code == 200
    assert httpx.get(keyed.url + "/api/tags", params={"accessToken": ENV_KEY}).status_code == 200
    body = {"model": STORIES, "prompt": "Once upon a time", "stream": False, "options": GREEDY}
    r = httpx.post(keyed.url + "/api/generate", json=body, params={"accessToken": ENV_KEY}, timeout=60)
    assert r.status_code == 200 and "Lily" in r.json()["response"]


def test_cors_preflight_needs_no_key_and_errors_are_readable(keyed: Daemon) -> None:
    origin = "https://chat.example.org"
    r = httpx.options(
        keyed.url + "/api/chat",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin
    r = httpx.get(keyed.url + "/api/tags", headers={"Origin": origin})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin
    r = httpx.get(keyed.url + "/api/tags", headers={"Origin": origin, **bearer(ENV_KEY)})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    assert httpx.get(keyed.url + "/api/tags", headers={"Origin": "https://example.org.evil"}).status_code == 403


def test_keys_made_by_the_cli_work_without_a_restart(keyed: Daemon) -> None:
    made = cli(keyed, "keys", "create", "--name", "alice", key=None)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert (keyed.models_dir.parent / "keys.json").is_file()
    assert httpx.get(keyed.url + "/api/tags", headers=bearer(key)).status_code == 200
    assert httpx.get(keyed.url + "/api/tags", headers={"x-api-key": key}).status_code == 200
    listing = cli(keyed, "keys", "list", key=None)
    assert "alice" in listing.stdout and key not in listing.stdout
    revoked = cli(keyed, "keys", "revoke", "alice", key=None)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(keyed.url + "/api/tags", headers=bearer(key)).status_code == 401
    assert httpx.get(keyed.url + "/api/tags", headers=bearer(ENV_KEY)).status_code == 200


def test_app_access_tokens(keyed: Daemon) -> None:
    made = cli(keyed, "keys", "create", "--app", "webapp", key=None)
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    appid, secret = fields["appid"], fields["secret"]
    r = httpx.get(keyed.url + "/api/v1/token", params={"appid": appid, "secret": "nope"})
    assert r.status_code == 401
    r = httpx.get(keyed.url + "/api/v1/token", params={"appid": appid})
    assert r.status_code == 400 and "secret" in r.json()["error"]
    r = httpx.get(keyed.url + "/api/v1/token", params={"appid": appid, "secret": secret})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert r.json()["expires_in"] == 2
    assert httpx.get(keyed.url + "/api/tags", params={"accessToken": token}).status_code == 200
    assert httpx.get(keyed.url + "/api/tags", headers=bearer(token)).status_code == 200
    file_secret = KeysFile.load(keyed.models_dir.parent / "keys.json").secret
    past = sign_token(file_secret, appid, int(time.time()) - 10)
    r = httpx.get(keyed.url + "/api/tags", headers=bearer(past))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    time.sleep(3)
    r = httpx.get(keyed.url + "/api/tags", params={"accessToken": token})
    assert r.status_code == 401 and "expired" in r.json()["error"]


def test_daily_quota(keyed: Daemon) -> None:
    made = cli(keyed, "keys", "create", "--name", "small", "--quota", "30", key=None)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    body = {"model": STORIES, "prompt": "Once upon a time", "stream": False, "options": GREEDY}
    first = httpx.post(keyed.url + "/api/generate", json=body, headers=bearer(key), timeout=60)
    assert first.status_code == 200, first.text
    # The answer is cut where the quota ends (it was 5 prompt + 40 answer tokens: 45 on a 30-token quota).
    done = first.json()
    assert done["done_reason"] == "length"
    assert done["prompt_eval_count"] + done["eval_count"] <= 30 and done["eval_count"] > 0
    r = httpx.post(keyed.url + "/api/generate", json=body, headers=bearer(key), timeout=60)
    assert r.status_code == 429 and "daily quota of 30 tokens" in r.json()["error"]
    assert int(r.headers["retry-after"]) > 0
    sdk = openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert "30 tokens" in str(err.value)
    # Other keys keep their own count.
    assert httpx.post(keyed.url + "/api/generate", json=body, headers=bearer(ENV_KEY), timeout=60).status_code == 200


def test_sessions_and_stored_responses_are_per_key(keyed: Daemon) -> None:
    made = cli(keyed, "keys", "create", "--name", "tenant-b", key=None)
    assert made.returncode == 0, made.stderr
    a, b = bearer(ENV_KEY), bearer(made.stdout.strip())
    turn = {"model": STORIES, "session_id": 42, "interactive_mode": True, "request_output_len": 8, "temperature": 0}
    url = keyed.url + "/v1/chat/interactive"
    assert httpx.post(url, json={**turn, "prompt": "Once upon a time"}, headers=a, timeout=60).status_code == 200
    again = httpx.post(url, json={**turn, "prompt": " there was"}, headers=a, timeout=60).json()
    assert again["history_tokens"] > 0
    # For key B, session 42 is new: none of A's history, and ending B's leaves A's.
    other = httpx.post(url, json={**turn, "prompt": "Once upon a time"}, headers=b, timeout=60).json()
    assert other["history_tokens"] == 0
    ended = httpx.post(url, json={"session_id": 42, "prompt": "", "interactive_mode": False}, headers=b, timeout=60)
    assert ended.json()["history_tokens"] > 0  # B's own session
    third = httpx.post(url, json={**turn, "prompt": " a cat"}, headers=a, timeout=60).json()
    assert third["history_tokens"] > again["history_tokens"]
    # A stored response is A's: B can neither read nor continue it.
    sdk_a = openai.OpenAI(base_url=keyed.url + "/v1", api_key=ENV_KEY, max_retries=0)
    sdk_b = openai.OpenAI(base_url=keyed.url + "/v1", api_key=made.stdout.strip(), max_retries=0)
    first = sdk_a.responses.create(model=CHAT, input="Say hi", max_output_tokens=8)
    with pytest.raises(openai.NotFoundError):
        sdk_b.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk_b.responses.create(model=CHAT, input="And?", previous_response_id=first.id, max_output_tokens=8)
    assert sdk_a.responses.retrieve(first.id).id == first.id


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LOCALLLM_API_KEYS": " , "}, "holds no key"),
        ({"LOCALLLM_API_KEYS": "short"}, "shorter than 16 characters"),
        ({"LOCALLLM_KEYS_FILE": "/nonexistent/keys.json"}, "does not exist"),
    ],
)
def test_key_settings_that_hold_no_key_stop_the_daemon(
    tmp_path: Path, hub: HubStub, env: dict[str, str], needle: str
) -> None:
    # Each of these used to start a daemon with authentication off (or with a 5-character key).
    with pytest.raises(RuntimeError, match="daemon exited with 1") as err:
        start_daemon(tmp_path, hub, **env)
    assert needle in str(err.value)


def test_openai_and_ollama_packages_with_a_key(keyed: Daemon) -> None:
    sdk = openai.OpenAI(base_url=keyed.url + "/v1", api_key=ENV_KEY, max_retries=0)
    done = sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Once upon a time"}],
        temperature=0,
        max_tokens=40,
    )
    assert "Lily" in (done.choices[0].message.content or "")
    streamed = sdk.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Once upon a time"}], max_tokens=10, stream=True
    )
    assert len([c for c in streamed if c.choices]) > 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0).models.list()

    client = ollama.Client(host=keyed.url, headers=bearer(ENV_KEY))
    out = client.generate(model=STORIES, prompt="Once upon a time", options=GREEDY)
    assert "Lily" in (out.response or "")
    assert "".join(p.response or "" for p in client.generate(model=STORIES, prompt="Once", stream=True, options=GREEDY))
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=keyed.url).list()
    assert err.value.status_code == 401


def test_cli_sends_localllm_api_key(keyed: Daemon) -> None:
    ok = cli(keyed, "list", key=ENV_KEY)
    assert ok.returncode == 0, ok.stderr
    assert f"{STORIES}:latest" in ok.stdout
    missing = cli(keyed, "list", key=None)
    assert missing.returncode == 1
    assert "requires an API key: set LOCALLLM_API_KEY" in missing.stderr and "Traceback" not in missing.stderr
    wrong = cli(keyed, "run", STORIES, "Once upon a time", key="wrong")
    assert wrong.returncode == 1
    assert "refused the API key (LOCALLLM_API_KEY): invalid API key" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    version = cli(keyed, "--version", key=None)
    assert version.returncode == 0 and "localllm version is" in version.stdout
