"""`/metrics` behind the switch and the API key, request ids on every answer, and the JSON log format, in
process (no runner: the scrape and the refusals need none)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from localllm.config import Settings
from localllm.config.values import parse_host
from localllm.domain.events import Done, Token
from localllm.observability import logs, metrics
from localllm.server.app import create_app


def client(tmp_path: Path, **settings: object) -> TestClient:
    config = Settings(host=parse_host(""), models_dir=tmp_path / "models", **settings)  # type: ignore[arg-type]
    return TestClient(create_app(config), base_url="http://127.0.0.1")  # no lifespan: no service


def test_metrics_are_off_unless_asked_for(tmp_path: Path) -> None:
    assert client(tmp_path).get("/metrics").status_code == 404


def test_metrics_sit_behind_the_api_key_and_answer_the_text_format(tmp_path: Path) -> None:
    metrics.enable()
    c = client(tmp_path, metrics=True, api_keys=("sekrit-sekrit-sekrit",))
    refused = c.get("/metrics")
    assert refused.status_code == 401 and refused.headers["x-request-id"]
    answer = c.get("/metrics", headers={"Authorization": "Bearer sekrit-sekrit-sekrit"})
    assert answer.status_code == 200
    names = {f.name for f in text_string_to_metric_families(answer.text)}
    assert {"localllm_time_to_first_token_seconds", "localllm_request_success", "localllm_http_requests"} <= names


def test_a_sane_request_id_is_echoed_and_any_other_replaced(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert c.get("/api/version", headers={"X-Request-Id": "abc-1"}).headers["x-request-id"] == "abc-1"
    made = c.get("/api/version", headers={"X-Request-Id": "bad id with blanks"}).headers["x-request-id"]
    assert len(made) == 32 and made != c.get("/api/version").headers["x-request-id"]


def test_a_watch_counts_one_generation() -> None:
    m = metrics.Metrics()
    watch = m.watch("m", 0, 0.5)
    for _ in range(3):
        watch.see(Token("x"))
    watch.see(Done("stop", prompt_eval_count=4, cached_tokens=2, eval_count=3))
    watch.fail()  # after Done: not a failure
    text = m.exposition().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    labels = (("dialect", ""), ("model", "m"))
    assert samples["localllm_inter_token_latency_seconds_count", labels] == 2
    assert samples["localllm_time_to_first_token_seconds_count", labels] == 1
    assert samples["localllm_request_queue_time_seconds_sum", labels] == 0.5
    assert samples["localllm_prompt_tokens_total", labels] == 6
    assert samples["localllm_prompt_tokens_cached_total", labels] == 2
    assert samples["localllm_prefix_cache_hits_total", labels] == 1
    assert samples["localllm_request_success_total", tuple(sorted((*labels, ("finished_reason", "stop"))))] == 1
    assert ("localllm_request_failure_total", labels) not in samples


def test_json_lines_carry_the_current_request() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs._RequestFilter())
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("localllm.test.json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        info, token = logs.begin("rid-7", "openai")
        logs.note_model("tiny")
        log.info("hello %s", "there", extra={"status": 200})
        logs.end(token)
        log.info("outside")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert info.id == "rid-7"
    assert first["message"] == "hello there" and first["request_id"] == "rid-7" and first["model"] == "tiny"
    assert first["dialect"] == "openai" and first["status"] == 200 and first["level"] == "INFO"
    assert "request_id" not in second


def test_the_grafana_dashboard_uses_only_metrics_the_daemon_exports() -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-localllm.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|total|count|sum)$", "", n) for e in exprs for n in re.findall(r"localllm_\w+", e)}
    exported = {family.name for family in metrics.Metrics().registry.collect()}
    assert used and used <= exported, used - exported


def test_the_replica_header_names_the_daemon_only_when_asked(tmp_path: Path) -> None:
    assert "x-localllm-replica" not in client(tmp_path).get("/").headers
    named = client(tmp_path, replica="left", api_keys=("sekrit-sekrit-sekrit",))
    assert named.get("/").headers["x-localllm-replica"] == "left"
    refused = named.get("/api/tags")  # refusals by the middleware inside it carry it too
    assert refused.status_code == 401 and refused.headers["x-localllm-replica"] == "left"
