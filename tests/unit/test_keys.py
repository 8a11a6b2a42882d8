"""The key store, tokens and quotas (localllm/auth/), the security middleware in-process, and `localllm keys`.

The same behaviour against a real daemon process is in test_security_e2e.py.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from localllm.auth import keysfile as keys
from localllm.auth import quota
from localllm.auth.authenticator import Authenticator
from localllm.auth.keysfile import KeysFile
from localllm.auth.principal import Principal, acting_as
from localllm.auth.tokens import sign_token
from localllm.config import Settings
from localllm.config.values import keys_file_from_env, parse_host, parse_origins
from localllm.domain.errors import ConfigError, InvalidRequest, QuotaExceeded, Unauthorized
from localllm.domain.names import parse_name
from localllm.modelstore.store import Manifest, Store
from localllm.scheduling.scheduler import Scheduler
from localllm.server.app import create_app
from localllm.server.security import host_of, is_loopback_origin
from localllm.service.core import Service
from localllm_cli.main import cli

from ..fakes import FakeFactory, write_tiny_gguf


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_key(path: Path, name: str = "", quota: int | None = None) -> str:
    _, secret = keys.update(path, lambda f: f.create("key", name, quota=quota))
    return secret


def make_app(path: Path, name: str = "notes", quota: int | None = None) -> tuple[str, str]:
    entry, secret = keys.update(path, lambda f: f.create("app", name, quota=quota))
    return entry.id, secret


# -- the keys file -----------------------------------------------------------------------------------------


def test_keys_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.json"
    key = make_key(path, "laptop", quota=500)
    assert key.startswith("llk-") and len(key) > 40
    text = path.read_text()
    assert key not in text and key[4:] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(text)
    assert data["version"] == 1 and len(data["secret"]) == 64
    [entry] = data["keys"]
    assert entry["name"] == "laptop" and entry["quota"] == 500 and entry["hint"] == "…" + key[-4:]
    assert KeysFile.load(path).entries[0].matches(key)
    assert not KeysFile.load(path).entries[0].matches(key + "x")


def test_revoke_by_id_or_unique_name(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    make_key(path, "a")
    make_key(path, "b")
    ids = [e.id for e in KeysFile.load(path).entries]
    gone = keys.update(path, lambda f: f.revoke("a"))
    assert gone.name == "a"
    gone = keys.update(path, lambda f: f.revoke(ids[1]))
    assert gone.name == "b"
    assert KeysFile.load(path).entries == ()
    with pytest.raises(InvalidRequest, match="no key or app"):
        keys.update(path, lambda f: f.revoke("nope"))


def test_names_and_quotas_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(InvalidRequest, match="an app needs a name"):
        make_app(path, "")
    with pytest.raises(InvalidRequest, match="quota"):
        make_key(path, quota=0)
    make_app(path, "notes")
    with pytest.raises(InvalidRequest, match="already"):
        make_app(path, "notes")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{nope", "not valid JSON"),
        ('{"version": 2, "secret": "' + "0" * 64 + '"}', "version 2"),
        ('{"version": 1}', "malformed"),
        ('{"version": 1, "secret": "' + "0" * 64 + '", "keys": [{"id": "k"}]}', "malformed"),
    ],
)
def test_a_broken_keys_file_stops_the_daemon_naming_it(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle) as err:
        Authenticator(path, token_ttl=3600)
    assert str(path) in str(err.value)


# -- authentication -----------------------------------------------------------------------------------------


def test_auth_is_off_without_keys_and_on_with_env_keys_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert not Authenticator(None, token_ttl=3600).enabled
    assert not Authenticator(path, token_ttl=3600).enabled
    env = Authenticator(None, ["s3cret-s3cret-s3cret"], token_ttl=3600)
    assert env.enabled and env.authenticate("s3cret-s3cret-s3cret").id == "env-1"
    with pytest.raises(Unauthorized, match="invalid API key"):
        env.authenticate("s3cret-s3cret-s3cret2")
    with pytest.raises(Unauthorized, match="requires an API key"):
        env.authenticate(None)


def test_the_file_is_read_again_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    auth = Authenticator(path, token_ttl=3600)
    assert not auth.enabled
    key = make_key(path, "a")
    assert auth.enabled and auth.authenticate(key).name == "a"
    keys.update(path, lambda f: f.revoke("a"))
    with pytest.raises(Unauthorized):
        auth.authenticate(key)
    assert auth.enabled, "an empty keys file still asks for keys (fail closed)"
    key2 = make_key(path, "b")
    assert auth.authenticate(key2).name == "b"
    path.write_text("{broken")  # a file that stops parsing keeps the keys read before
    os.utime(path, ns=(1, 1))
    assert auth.authenticate(key2).name == "b"
    assert "keeping the keys read before" in caplog.text
    path.unlink()
    assert not auth.enabled


def test_app_tokens(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    appid, secret = make_app(path, "notes", quota=100)
    clock = Clock()
    auth = Authenticator(path, token_ttl=60, clock=clock)
    issued = auth.issue_token(appid, secret)
    assert issued.expires_at == int(clock.now) + 60
    principal = auth.authenticate(issued.token)
    assert (principal.id, principal.name, principal.quota) == (appid, "notes", 100)
    with pytest.raises(Unauthorized, match="wrong appid or secret"):
        auth.issue_token(appid, secret + "x")
    with pytest.raises(Unauthorized, match="wrong appid or secret"):
        auth.issue_token("app-0000", secret)
    with pytest.raises(Unauthorized, match="invalid access token"):
        auth.authenticate(issued.token[:-2] + "AA")
    with pytest.raises(Unauthorized, match="invalid access token"):
        forged = KeysFile.load(path).secret[::-1]
        auth.authenticate(sign_token(forged, appid, issued.expires_at))
    clock.now += 61
    with pytest.raises(Unauthorized, match="expired at"):
        auth.authenticate(issued.token)
    # An app secret is not an API key.
    with pytest.raises(Unauthorized, match="invalid API key"):
        auth.authenticate(secret)
    clock.now -= 61
    keys.update(path, lambda f: f.revoke("notes"))
    with pytest.raises(Unauthorized):
        auth.authenticate(issued.token)


def test_quota_counts_tokens_per_utc_day(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = make_key(path, "small", quota=10)
    clock = Clock(1_700_000_000.0 - 1_700_000_000.0 % 86400 + 3600)  # 01:00 UTC
    auth = Authenticator(path, token_ttl=3600, clock=clock)
    who = auth.authenticate(key)
    with acting_as(who), quota.metering(auth.quotas):
        quota.check_quota()
        quota.charge(6)
        quota.check_quota()
        quota.charge(6)
        with pytest.raises(QuotaExceeded, match="daily quota of 10 tokens") as err:
            quota.check_quota()
    assert err.value.retry_after == 23 * 3600
    quota.charge(1000)  # outside a request: nothing to charge
    assert auth.quotas.used_today(who) == 12
    clock.now += 86400
    auth.quotas.check(who)
    assert auth.quotas.used_today(who) == 0


# -- configuration -----------------------------------------------------------------------------------------


def test_security_settings() -> None:
    s = Settings.from_env(
        {
            "LOCALLLM_MODELS": "/srv/llm/models",
            "LOCALLLM_API_KEYS": " k3y-one-0123456789, k3y-two-0123456789 ,,",
            "LOCALLLM_ORIGINS": "https://x.org, chrome-extension://*",
            "LOCALLLM_TOKEN_TTL": "30m",
        }
    )
    assert s.api_keys == ("k3y-one-0123456789", "k3y-two-0123456789") and "k3y" not in repr(s)
    assert s.origins == ("https://x.org", "chrome-extension://*")
    assert s.keys_file == Path("/srv/llm/keys.json")
    assert s.token_ttl == 1800
    assert keys_file_from_env({"LOCALLLM_KEYS_FILE": "/etc/k.json"}) == Path("/etc/k.json")
    assert Settings(host=parse_host(""), models_dir=Path("m")).keys_file is None


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LOCALLLM_ORIGINS": "example.org"}, "LOCALLLM_ORIGINS"),
        ({"LOCALLLM_TOKEN_TTL": "0"}, "LOCALLLM_TOKEN_TTL"),
        ({"LOCALLLM_TOKEN_TTL": "-1"}, "LOCALLLM_TOKEN_TTL"),
        ({"LOCALLLM_TOKEN_TTL": "soon"}, "LOCALLLM_TOKEN_TTL"),
        ({"LOCALLLM_TOKEN_TTL": "1e18"}, "LOCALLLM_TOKEN_TTL"),
        # Set, but holding no key: refused, never read as "no keys" (authentication off).
        ({"LOCALLLM_API_KEYS": " , "}, "LOCALLLM_API_KEYS=',' holds no key"),  # as read: stripped
        ({"LOCALLLM_API_KEYS": ","}, "holds no key"),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_origin_and_host_parsing() -> None:
    assert parse_origins("*") == ("*",)
    for origin in ("http://localhost", "https://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173"):
        assert is_loopback_origin(origin), origin
    for origin in ("http://evil.example", "http://localhost.evil.example", "ftp://localhost", "null"):
        assert not is_loopback_origin(origin), origin
    assert host_of("LocalHost:11434") == "localhost"
    assert host_of("[::1]:80") == "::1"
    assert host_of("127.0.0.1") == "127.0.0.1"
    assert host_of("evil.example:11434") == "evil.example"


def test_keys_settings_never_turn_authentication_quietly_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A key shorter than API_KEY_MIN_CHARS (16) stops the daemon, naming which.
    with pytest.raises(ConfigError, match=r"key #2 is shorter than 16 characters"):
        Authenticator(None, ["long-enough-key-0001", "short"])
    settings = Settings.from_env({"LOCALLLM_API_KEYS": "x", "LOCALLLM_MODELS": str(tmp_path / "m")})
    with pytest.raises(ConfigError, match="shorter than 16"):
        create_app(settings)
    # A keys file named by LOCALLLM_KEYS_FILE must exist: the daemon does not start without it.
    missing = tmp_path / "nope" / "keys.json"
    settings = Settings.from_env({"LOCALLLM_KEYS_FILE": str(missing), "LOCALLLM_MODELS": str(tmp_path / "m")})
    assert settings.keys_file == missing and settings.keys_file_required
    with pytest.raises(ConfigError, match=f"LOCALLLM_KEYS_FILE: the keys file {missing} does not exist"):
        create_app(settings)
    # ... and once read, removing it keeps the keys read before (the default file's removal turns auth off).
    named = tmp_path / "named.json"
    key = make_key(named, "a")
    auth = Authenticator(named, required=True)
    named.unlink()
    assert auth.enabled and auth.authenticate(key).name == "a"
    assert "keeping the keys read before" in caplog.text


@pytest.mark.parametrize(
    "token",
    [
        "lltok.x." + "1" * 5000 + ".sig",  # int() refuses more than 4300 digits: was a 500
        "lltok.x.\u0661\u0662\u0663.sig",  # digits, but not ASCII ones
        "lltok.x.00001700000000.sig",
        "lltok.x.-5.sig",
        "lltok...",
    ],
)
def test_a_malformed_access_token_is_a_401_never_a_500(tmp_path: Path, token: str) -> None:
    path = tmp_path / "keys.json"
    make_app(path)
    with pytest.raises(Unauthorized, match="invalid access token"):
        Authenticator(path).authenticate(token)
    for client in app_client(tmp_path, keys_file=path):
        r = client.get("/api/tags", params={"accessToken": token})
        assert r.status_code == 401 and r.json()["error"] == "invalid access token"


def test_a_generation_reserves_its_tokens_and_never_overshoots_the_quota(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = make_key(path, "small", quota=10)
    auth = Authenticator(path, clock=Clock())
    who = auth.authenticate(key)
    quotas = auth.quotas
    first = quotas.reserve(who, 3, -1)  # no num_predict: as many answer tokens as are left
    assert first.granted == 7
    with pytest.raises(QuotaExceeded, match="reserved by requests in flight") as err:
        quotas.reserve(who, 1, 100)  # the first holds the rest of the day
    assert err.value.retry_after == 1
    with pytest.raises(QuotaExceeded, match="held by its requests in flight"):
        quotas.check(who)
    first.settle(5)  # the real count: the rest is free again
    assert quotas.used_today(who) == 5
    second = quotas.reserve(who, 2, 100)
    assert second.granted == 3
    with second:  # left without settling (the client went away): the prompt and the pieces seen count
        second.seen = 1
    assert quotas.used_today(who) == 8
    with pytest.raises(QuotaExceeded, match="leave nothing of the daily quota"):
        quotas.reserve(who, 2, 5)
    with pytest.raises(InvalidRequest), quotas.reserve(who, 1, 1):  # refused as invalid: charged nothing
        raise InvalidRequest("does not fit")
    assert quotas.used_today(who) == 8
    free = Principal("key-free", "free")  # no quota: no bound, and the day's tokens still counted
    unbounded = quotas.reserve(free, 0, -1)
    assert unbounded.granted == -1
    unbounded.settle(12)
    assert quotas.used_today(free) == 12
    # Through the service: the fake runner's job is cut to what is left after its prompt ("hi": 2 tokens).
    path2 = tmp_path / "k2.json"
    key = make_key(path2, "small", quota=10)
    factory = FakeFactory()
    for client in app_client(tmp_path, keys_file=path2, factory=factory):
        body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 100}}
        assert client.post("/api/generate", json=body, headers={"x-api-key": key}).status_code == 200
        assert factory.runners[0].jobs[-1].num_predict == 8
    # With no num_predict a generation holds what the context leaves for its answer, not the whole day's quota.
    path3 = tmp_path / "k3.json"
    key = make_key(path3, "big", quota=100_000)
    factory = FakeFactory()
    for client in app_client(tmp_path, keys_file=path3, factory=factory):
        body = {"model": "tiny", "prompt": "hi", "stream": False}
        assert client.post("/api/generate", json=body, headers={"x-api-key": key}).status_code == 200
        n_ctx = factory.runners[0].info.n_ctx
        assert n_ctx is not None and n_ctx < 1000 and factory.runners[0].jobs[-1].num_predict == n_ctx - 2


# -- the middleware, in-process ------------------------------------------------------------------------------


def app_client(tmp_path: Path, factory: FakeFactory | None = None, **settings: Any) -> Iterator[TestClient]:
    config = Settings(host=parse_host(""), models_dir=tmp_path / "models", **settings)
    store = Store(config.models_dir)
    layer = store.add_blob_file(write_tiny_gguf(tmp_path / "tiny.gguf", template="{{ messages[-1].content }}!"))
    store.write_manifest(parse_name("tiny"), Manifest((layer,)))
    service = Service(config, store, Scheduler(factory=factory or FakeFactory()))
    with TestClient(create_app(config, service=service), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from app_client(tmp_path, origins=("https://*.example.org",))


def test_host_check_in_both_dialects(open_client: TestClient) -> None:
    assert open_client.get("/api/tags", headers={"Host": "localhost:11434"}).status_code == 200
    assert open_client.get("/api/tags", headers={"Host": "[::1]:11434"}).status_code == 200
    assert open_client.get("/api/tags", headers={"Host": "127.0.0.2"}).status_code == 200
    r = open_client.get("/api/tags", headers={"Host": "evil.example"})
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]
    r = open_client.get("/v1/models", headers={"Host": "evil.example:11434"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(WebSocketDisconnect) as closed:
        with open_client.websocket_connect("/api/tags", headers={"Host": "evil.example"}):
            pass
    assert closed.value.code == 1008


def test_cors(open_client: TestClient) -> None:
    r = open_client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "Origin" in r.headers["vary"]
    r = open_client.get("/api/tags", headers={"Origin": "https://app.example.org"})
    assert r.headers["access-control-allow-origin"] == "https://app.example.org"
    assert open_client.get("/api/tags", headers={"Origin": "tauri://localhost"}).status_code == 200
    r = open_client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "LOCALLLM_ORIGINS" in r.json()["error"]["message"]
    preflight = {
        "Origin": "http://127.0.0.1:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    r = open_client.options("/v1/chat/completions", headers=preflight)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    r = open_client.options("/api/chat", headers={**preflight, "Access-Control-Request-Headers": "x-evil"})
    assert r.status_code == 403 and "x-evil" in r.json()["error"]


def test_auth_in_process(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = make_key(path, "small", quota=15)  # each fake generation counts 3 prompt + 3 answer tokens
    for client in app_client(tmp_path, keys_file=path):
        body = {"model": "tiny", "prompt": "hi", "stream": False}
        assert client.get("/api/version").status_code == 200
        assert client.head("/").status_code == 200
        r = client.post("/api/generate", json=body)
        assert r.status_code == 401 and "requires an API key" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = client.get("/v1/models", headers={"Authorization": f"Basic {key}"})
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
        # 401 answers to a browser carry CORS headers, so its page can read why.
        r = client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert client.post("/api/generate", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.post("/api/generate", json=body, headers={"x-api-key": key}).status_code == 200
        r = client.post("/api/generate", json=body, params={"accessToken": key})
        assert r.status_code == 200
        r = client.post("/api/generate", json=body, params={"accessToken": key})
        assert r.status_code == 429 and "daily quota of 15 tokens" in r.json()["error"]
        assert int(r.headers["retry-after"]) > 0
        r = client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        # Listing is not generating: it stays allowed.
        assert client.get("/api/tags", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_token_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    appid, secret = make_app(path)
    for client in app_client(tmp_path, keys_file=path, token_ttl=120.0):
        r = client.get("/api/v1/token", params={"appid": appid})
        assert r.status_code == 400 and "secret is required" in r.json()["error"]
        r = client.get("/api/v1/token", params={"appid": appid, "secret": "wrong"})
        assert r.status_code == 401
        r = client.get("/api/v1/token", params={"appid": appid, "secret": secret})
        assert r.status_code == 200, r.text
        issued = r.json()
        assert issued["token_type"] == "Bearer" and issued["expires_in"] == 120
        headers = {"Authorization": f"Bearer {issued['access_token']}"}
        assert client.get("/api/tags", headers=headers).status_code == 200
        assert client.get("/api/tags", params={"accessToken": issued["access_token"]}).status_code == 200


# -- `localllm keys` ----------------------------------------------------------------------------------------


def test_cli_keys_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "--file", str(path), "create", "--name", "laptop", "--quota", "1000"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("llk-") and "shown only this once" in made.stderr
    assert "Authentication is now on" in made.stderr
    app = runner.invoke(cli, ["keys", "--file", str(path), "create", "--app", "notes"])
    assert app.exit_code == 0, app.output
    assert app.stdout.startswith("appid: app-") and "secret: " in app.stdout
    listing = runner.invoke(cli, ["keys", "--file", str(path), "list"])
    assert listing.exit_code == 0
    assert "laptop" in listing.stdout and "notes" in listing.stdout and "1,000" in listing.stdout
    assert key not in listing.stdout and key[-4:] in listing.stdout
    gone = runner.invoke(cli, ["keys", "--file", str(path), "revoke", "laptop"])
    assert gone.exit_code == 0 and "Revoked the key" in gone.stderr
    missing = runner.invoke(cli, ["keys", "--file", str(path), "revoke", "laptop"])
    assert missing.exit_code == 1 and "no key or app" in missing.output
    both = runner.invoke(cli, ["keys", "--file", str(path), "create", "--app", "x", "--name", "y"])
    assert both.exit_code == 2
    bad = runner.invoke(cli, ["keys", "--file", str(path), "create", "--quota", "0"])
    assert bad.exit_code == 2
    assert runner.invoke(cli, ["keys", "--file", str(tmp_path / "none.json"), "list"]).exit_code == 0
    assert not (tmp_path / "none.json").exists()


# -- tenancy: what the daemon keeps for a client belongs to its key -------------------------------------------

KEY_A, KEY_B = "key-of-tenant-a-0123", "key-of-tenant-b-0123"


def test_sessions_and_stored_responses_belong_to_the_key_that_made_them(tmp_path: Path) -> None:
    for client in app_client(tmp_path, api_keys=(KEY_A, KEY_B)):
        a, b = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}
        # LMDeploy: A opens session 7; for B it does not exist (it can neither continue nor end it).
        turn = {"model": "tiny", "session_id": 7, "sequence_start": True, "sequence_end": False}
        assert client.post("/v1/chat/interactive", json={**turn, "prompt": "hi"}, headers=a).status_code == 200
        go_on = {**turn, "sequence_start": False, "prompt": "more"}
        r = client.post("/v1/chat/interactive", json=go_on, headers=b)
        assert r.status_code == 400 and "session 7 does not exist" in r.json()["message"]
        end = {"session_id": 7, "prompt": "", "interactive_mode": False}
        assert client.post("/v1/chat/interactive", json=end, headers=b).json()["history_tokens"] == 0
        assert client.post("/v1/chat/interactive", json={**end, "cancel": True}, headers=b).status_code == 200
        assert client.post("/v1/chat/interactive", json=go_on, headers=a).status_code == 200
        # B may have its own session 7 beside A's.
        assert client.post("/v1/chat/interactive", json={**turn, "prompt": "hi"}, headers=b).status_code == 200
        # Responses: A's stored response cannot be read, chained or deleted by B.
        made = client.post("/v1/responses", json={"model": "tiny", "input": "hi"}, headers=a)
        assert made.status_code == 200, made.text
        rid = made.json()["id"]
        assert client.get(f"/v1/responses/{rid}", headers=b).status_code == 404
        assert client.get(f"/v1/responses/{rid}/input_items", headers=b).status_code == 404
        chained = {"model": "tiny", "input": "and?", "previous_response_id": rid}
        assert client.post("/v1/responses", json=chained, headers=b).status_code == 404
        assert client.delete(f"/v1/responses/{rid}", headers=b).status_code == 404
        assert client.get(f"/v1/responses/{rid}", headers=a).status_code == 200
        assert client.post("/v1/responses", json=chained, headers=a).status_code == 200
