"""Prometheus metrics (`GET /metrics` when `LOCALLLM_METRICS=1`), named after vLLM's (`vllm:` → `localllm_`).

Off by default: `active()` is then None and every hook is one `is None` test. On, the service opens a
`Watch` per generation (a `time.perf_counter()` per streamed piece gives time to first token and the gaps
between pieces), the scheduler counts loads, unloads and crashes, pulls count their bytes, and the HTTP layer
counts requests by status. Gauges of what runs and waits are read from the scheduler when scraped, so they
cost nothing between scrapes. Labels: `model` (its name), `dialect` (the API dialect that owns the request's
path, `logs.current()`; empty outside an HTTP request). A registry of our own, not the library's global one.

KV cache use is not exported: llama-cpp-python's runner does not report how many cells are in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..domain.events import Done, Token
from . import logs

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "localllm_"
BY_REQUEST = ("model", "dialect")

# Buckets as vLLM's (seconds), cut to what a local daemon sees.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 300.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)

# One row of the scheduler's state for the gauges: model, requests running (= slots busy), slots, waiting.
Usage = Callable[[], Iterable[tuple[str, int, int, int]]]


class _SchedulerGauges(Collector):
    def __init__(self, usage: Usage) -> None:
        self.usage = usage

    def collect(self) -> Iterable[Metric]:
        running = GaugeMetricFamily(f"{PREFIX}num_requests_running", "Requests generating now", labels=["model"])
        waiting = GaugeMetricFamily(
            f"{PREFIX}num_requests_waiting", "Requests waiting for a slot or a load", labels=["model"]
        )
        busy = GaugeMetricFamily(f"{PREFIX}slots_busy", "Sequence slots in use", labels=["model"])
        slots = GaugeMetricFamily(f"{PREFIX}num_slots", "Sequence slots of the loaded model", labels=["model"])
        loaded = GaugeMetricFamily(f"{PREFIX}models_loaded", "Models loaded now")
        rows = list(self.usage())
        for name, users, total, queued in rows:
            running.add_metric([name], users)
            waiting.add_metric([name], queued)
            busy.add_metric([name], users)
            slots.add_metric([name], total)
        loaded.add_metric([], sum(1 for row in rows if row[2] > 0))
        return [running, waiting, busy, slots, loaded]


class Metrics:
    """Every metric of the daemon, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = BY_REQUEST) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=r)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = BY_REQUEST
        ) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=r)

        self.requests = counter("http_requests", "HTTP requests answered, by status", (*BY_REQUEST, "status"))
        self.success = counter(
            "request_success", "Generations finished, by finish reason", (*BY_REQUEST, "finished_reason")
        )
        self.failures = counter("request_failure", "Generations ended by an error or a client that left")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of generations (cached ones included)")
        self.generation_tokens = counter("generation_tokens", "Tokens generated")
        self.cached_tokens = counter("prompt_tokens_cached", "Prompt tokens whose KV cache was reused")
        self.cache_queries = counter("prefix_cache_queries", "Generations that looked up the prompt cache")
        self.cache_hits = counter("prefix_cache_hits", "Generations that reused part of the prompt cache")
        self.draft_tokens = counter("spec_draft_tokens", "Tokens drafted by speculative decoding")
        self.draft_accepted = counter("spec_accepted_tokens", "Drafted tokens the model kept")
        self.ttft = histogram("time_to_first_token_seconds", "Time to the first generated piece", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between streamed pieces", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Time from request to its last token", LATENCY_BUCKETS)
        self.queue = histogram("request_queue_time_seconds", "Time waiting for a slot (no loads)", LATENCY_BUCKETS)
        self.prompt_sizes = histogram("request_prompt_tokens", "Prompt tokens per generation", TOKEN_BUCKETS)
        self.generation_sizes = histogram("request_generation_tokens", "Tokens generated per request", TOKEN_BUCKETS)
        self.loads = counter("model_loads", "Models loaded", ("model",))
        self.unloads = counter("model_unloads", "Models unloaded", ("model",))
        self.crashes = counter("model_crashes", "Model runners that died", ("model",))
        self.load_time = histogram("model_load_seconds", "Time to load a model", LOAD_BUCKETS, ("model",))
        self.pull_bytes = counter("pull_bytes", "Bytes downloaded by pulls", ("model",))
        self.gauges = _SchedulerGauges(lambda: ())
        r.register(self.gauges)

    def watch_scheduler(self, usage: Usage) -> None:
        """Read the running/waiting/slot gauges from `usage` (the scheduler's) at each scrape."""
        self.gauges.usage = usage

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def watch(self, model: str, started_ns: int, queued_s: float) -> Watch:
        """Start watching one generation that asked at `started_ns` (perf_counter_ns) and waited `queued_s`."""
        return Watch(self, (model, _dialect()), started_ns, queued_s)


class Watch:
    """The timings of one generation: `see` each event the runner yields, `fail` if it ends in an error."""

    __slots__ = ("done", "labels", "last", "metrics", "started")

    def __init__(self, metrics: Metrics, labels: tuple[str, str], started_ns: int, queued_s: float) -> None:
        self.metrics = metrics
        self.labels = labels
        self.started = started_ns / 1e9
        self.last = 0.0
        self.done = False
        metrics.queue.labels(*labels).observe(queued_s)

    def see(self, event: Token | Done) -> None:
        now = time.perf_counter()
        m = self.metrics
        if isinstance(event, Token):
            if self.last:
                m.itl.labels(*self.labels).observe(now - self.last)
            else:
                m.ttft.labels(*self.labels).observe(now - self.started)
            self.last = now
            return
        labels = self.labels
        self.done = True
        prompt = event.prompt_eval_count + event.cached_tokens
        m.success.labels(*labels, event.reason).inc()
        m.e2e.labels(*labels).observe(now - self.started)
        m.prompt_tokens.labels(*labels).inc(prompt)
        m.generation_tokens.labels(*labels).inc(event.eval_count)
        m.cached_tokens.labels(*labels).inc(event.cached_tokens)
        m.cache_queries.labels(*labels).inc()
        if event.cached_tokens:
            m.cache_hits.labels(*labels).inc()
        if event.draft_count:
            m.draft_tokens.labels(*labels).inc(event.draft_count)
            m.draft_accepted.labels(*labels).inc(event.draft_accepted)
        m.prompt_sizes.labels(*labels).observe(prompt)
        m.generation_sizes.labels(*labels).observe(event.eval_count)

    def fail(self) -> None:
        if not self.done:
            self.metrics.failures.labels(*self.labels).inc()


def _dialect() -> str:
    info = logs.current()
    return info.dialect if info is not None else ""


_ACTIVE: Metrics | None = None


def active() -> Metrics | None:
    """The metrics when they are on, else None (every hook tests this first)."""
    return _ACTIVE


def enable() -> Metrics:
    """Turn metrics on (once per process: a second call returns the same registry)."""
    global _ACTIVE
    if _ACTIVE is None:
        _ACTIVE = Metrics()
    return _ACTIVE


def disable() -> None:
    global _ACTIVE
    _ACTIVE = None


def count_request(status: int, model: str, dialect: str) -> None:
    if _ACTIVE is not None:
        _ACTIVE.requests.labels(model, dialect, str(status)).inc()


def count_load(model: str, seconds: float) -> None:
    if _ACTIVE is not None:
        _ACTIVE.loads.labels(model).inc()
        _ACTIVE.load_time.labels(model).observe(seconds)


def count_unload(model: str, *, crashed: bool) -> None:
    if _ACTIVE is not None:
        (_ACTIVE.crashes if crashed else _ACTIVE.unloads).labels(model).inc()


def count_pull(model: str, nbytes: int) -> None:
    if _ACTIVE is not None and nbytes > 0:
        _ACTIVE.pull_bytes.labels(model).inc(nbytes)
