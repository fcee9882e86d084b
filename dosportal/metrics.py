"""Prometheus metrics: what the gateway counts, and the `/metrics` view that exports them.

Multi-process mode: every worker writes its values to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR`, and `/metrics` (whichever worker answers it) sums them, so N
uvicorn workers report one set. Set that variable to an empty directory, the same for all
workers of a host, and empty it before the server starts (the Dockerfile and the systemd
unit in deploy/ do). When it is unset, this module makes a temporary directory of its own
and removes it at exit: right for one process (`make run`, tests), but with several
workers each would then report only its own counts.

The functions the gateway calls (`call_finished`, `refused`, `in_flight`, ...) only add to
process-local amounts that a thread writes to those files every second; each costs one or
two microseconds at most (bench/metrics.py measures them), and values reach /metrics within
about a second. Every label value is bounded: endpoints are a fixed set, model names, error
codes and upstream labels are kept to a pattern and a cap (then "other"); a key or user id
is never a label.
"""

from __future__ import annotations

import atexit
import glob
import hmac
import os
import re
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_directory = tempfile.mkdtemp(prefix="dosportal-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_directory
    atexit.register(shutil.rmtree, _own_directory, True)
# prometheus_client chose its value class when first imported, from the environment as it
# was then: these metrics write to the shared files whatever the order of imports.
values.ValueClass = values.MultiProcessValue()

MULTIPROC_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]

ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "models", "responses"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
# The status of each refusal code of the documented error table (others: pass `status=`).
REFUSAL_STATUS = {
    "invalid_api_key": 401,
    "expired_api_key": 401,
    "insufficient_balance": 402,
    "key_spend_limit_exceeded": 402,
    "model_not_allowed": 403,
    "ip_not_allowed": 403,
    "rate_limit_exceeded": 429,
    "concurrency_limit_exceeded": 429,
    "auth_rate_limited": 429,
    "request_too_large": 413,
    "service_unavailable": 503,
}

requests_total = Counter(
    "dos_ai_requests", "/v1 calls answered, by endpoint, model, HTTP status and error code.",
    ["endpoint", "model", "status", "code"],
)  # fmt: skip
request_duration = Histogram(
    "dos_ai_request_duration_seconds", "Time from receiving a /v1 call to its last byte.",
    ["endpoint", "model"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
time_to_first_token = Histogram(
    "dos_ai_time_to_first_token_seconds", "Time from receiving a /v1 call to the first token sent.",
    ["endpoint", "model"], buckets=TTFT_BUCKETS,
)  # fmt: skip
prompt_tokens_total = Counter("dos_ai_prompt_tokens", "Prompt (input) tokens metered.", ["model"])
completion_tokens_total = Counter("dos_ai_completion_tokens", "Completion (output) tokens metered.", ["model"])
charged_total = Counter("dos_ai_charged_micro_usd", "Money charged for usage, in micro-USD.", ["model"])
refusals_total = Counter("dos_ai_refusals", "/v1 calls refused before the upstream, by reason.", ["reason", "status"])
requests_in_flight = Gauge(
    "dos_ai_requests_in_flight", "/v1 calls being served.", ["endpoint"], multiprocess_mode="livesum"
)
streams_in_flight = Gauge(
    "dos_ai_streams_in_flight", "/v1 streams being relayed.", ["endpoint"], multiprocess_mode="livesum"
)
upstream_requests_total = Counter(
    "dos_ai_upstream_requests", "Calls to upstream endpoints, by outcome (ok or error).", ["upstream", "outcome"]
)
upstream_duration = Histogram(
    "dos_ai_upstream_duration_seconds", "Time an upstream endpoint took to answer (headers).",
    ["upstream"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
upstream_healthy = Gauge(
    "dos_ai_upstream_healthy", "1 while an upstream endpoint is in service in every worker, 0 when any took it out.",
    ["upstream"], multiprocess_mode="livemin",
)  # fmt: skip
limiter_fail_open_total = Counter(
    "dos_ai_limiter_fail_open", "Requests admitted without a rate-limit decision because Redis was unreachable."
)
settlement_retries_total = Counter("dos_ai_settlement_retries", "Settlements retried after a database failure.")
written_off_total = Counter(
    "dos_ai_written_off_micro_usd",
    "Usage the upstream reported beyond a call's hold (its admitted upper bound), not charged, in micro-USD.",
)
recovered_holds_total = Counter(
    "dos_ai_recovered_holds", "Holds of calls whose worker died, settled for what they had delivered."
)
settlements_refused_total = Counter(
    "dos_ai_settlements_refused", "Settlements the database refused (not an outage): each waits, logged at ERROR."
)
spool_write_failures_total = Counter(
    "dos_ai_spool_write_failures",
    "Writes to the settlement spool that failed (the settlement waits in memory), by operation.",
    ["operation"],
)
keys_seen_in_prompts_total = Counter(
    "dos_ai_keys_seen_in_prompts",
    "Well-formed API keys (checksum valid) found in the body of /v1 calls: someone pasted a key into a prompt.",
)
metrics_scrapes_total = Counter("dos_ai_metrics_scrapes", "Requests to /metrics, by result.", ["result"])


class _Bounded:
    """Label values from outside (model names, error codes, upstream labels): a value
    that fits `pattern` is kept until `cap` distinct values were seen; then "other"."""

    def __init__(self, pattern: str, cap: int, clean: Callable[[str], str] = str):
        self._pattern = re.compile(pattern)
        self._cap = cap
        self._clean = clean
        self._seen: dict[str, str] = {}

    def __call__(self, value: str | None) -> str:
        label = self._seen.get(value)  # type: ignore[arg-type]
        if label is not None:
            return label
        if value is None or value == "":
            return ""
        if len(self._seen) >= self._cap or not isinstance(value, str):
            return "other"
        label = self._clean(value)
        if not self._pattern.fullmatch(label):
            return "other"
        self._seen[value] = label
        return label


def upstream_label(url: str) -> str:
    """`host:port/path` of an upstream base URL: never its credentials or query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or ''}{port}{parts.path.rstrip('/')}"


_model = _Bounded(r"[A-Za-z0-9._:/@+-]{1,64}", cap=100)
_code = _Bounded(r"[a-z0-9_.]{1,64}", cap=100)
_upstream = _Bounded(r"[A-Za-z0-9._:/\[\]-]{1,128}", cap=64, clean=upstream_label)


def _endpoint(endpoint: str) -> str:
    return endpoint if endpoint in ENDPOINTS else "other"


# --- The hot path -----------------------------------------------------------------
# A prometheus_client write in multi-process mode costs about a microsecond (a lock, a
# getpid and a write to the mapped file), and a finished call makes eight. So calls only add
# to process-local pending amounts (one uncontended lock per call); a daemon thread writes
# them to the files every FLUSH_SECONDS, and so do /metrics in the worker that answers it
# and the process's exit.
FLUSH_SECONDS = 1.0
_lock = threading.Lock()
_pending: list[_Add | _Observe] = []


class _Add:
    """A pending amount for one labelled counter or gauge (a gauge's may be negative)."""

    __slots__ = ("amount", "target")

    def __init__(self, target: Any):
        self.target = target
        self.amount = 0.0

    def take(self) -> Callable[[], None] | None:
        amount, self.amount = self.amount, 0.0
        return (lambda: self.target.inc(amount)) if amount else None


class _Observe:
    """Pending observations of one labelled histogram, already counted into its buckets."""

    __slots__ = ("bounds", "counts", "target", "total")

    def __init__(self, target: Any):
        self.target = target
        self.bounds = target._upper_bounds
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        if value == value:  # a NaN would poison the sum for good
            self.counts[bisect_left(self.bounds, value)] += 1
            self.total += value

    def take(self) -> Callable[[], None] | None:
        counts, total = self.counts, self.total
        if not any(counts):
            return None
        self.counts, self.total = [0] * len(self.bounds), 0.0

        def apply() -> None:
            self.target._sum.inc(total)
            for bucket, count in zip(self.target._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)

        return apply


def _add(metric: Any, *labels: str) -> _Add:
    pending = _Add(metric.labels(*labels) if labels else metric)
    _pending.append(pending)
    return pending


def _observe(metric: Any, *labels: str) -> _Observe:
    pending = _Observe(metric.labels(*labels))
    _pending.append(pending)
    return pending


def flush() -> None:
    """Write the pending amounts to the shared files."""
    with _lock:
        writes = [write for write in (pending.take() for pending in _pending) if write is not None]
    for write in writes:
        write()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush()


_flusher: threading.Thread | None = None


def _start_flusher() -> None:
    global _flusher
    if _flusher is None:
        _flusher = threading.Thread(target=_flush_forever, name="metrics-flush", daemon=True)
        _flusher.start()


class _CallMetrics:
    __slots__ = ("charged", "completion", "duration", "prompt", "requests", "ttft")

    def __init__(self, endpoint: str, model: str, status: str, code: str):
        self.requests = _add(requests_total, endpoint, model, status, code)
        self.duration = _observe(request_duration, endpoint, model)
        self.ttft = _observe(time_to_first_token, endpoint, model)
        self.prompt = _add(prompt_tokens_total, model)
        self.completion = _add(completion_tokens_total, model)
        self.charged = _add(charged_total, model)


_calls: dict[tuple[str, str, int, str], _CallMetrics] = {}
_refusals: dict[tuple[str, int], _Add] = {}
_upstreams: dict[tuple[str, bool], tuple[_Add, _Observe]] = {}


def call_finished(
    *,
    endpoint: str,
    model: str,
    status: int,
    code: str = "",
    latency_s: float,
    ttft_s: float | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    charged_micros: int = 0,
) -> None:
    """One /v1 call is over (served, failed upstream, or cut off by the client). `model` is
    the public name of a served model (or "" when the call never named a served one);
    `code` the error code of the answer, "" for a success."""
    key = (_endpoint(endpoint), _model(model), status, _code(code))
    pending = _calls.get(key)
    if pending is None:
        with _lock:
            pending = _calls[key] = _CallMetrics(key[0], key[1], str(status), key[3])
        _start_flusher()
    with _lock:
        pending.requests.amount += 1
        pending.duration.add(latency_s)
        if ttft_s is not None:
            pending.ttft.add(ttft_s)
        pending.prompt.amount += prompt_tokens
        pending.completion.amount += completion_tokens
        pending.charged.amount += charged_micros


def refused(*, reason: str, status: int | None = None) -> None:
    """A call refused before reaching the upstream; `reason` is its error code."""
    if status is None:
        status = REFUSAL_STATUS.get(reason, 0)
    key = (_code(reason), status)
    pending = _refusals.get(key)
    if pending is None:
        with _lock:
            pending = _refusals[key] = _add(refusals_total, key[0], str(status))
        _start_flusher()
    with _lock:
        pending.amount += 1


class _InFlight:
    """Counts a call (and, for a stream, the stream) while the `with` block runs.
    Stateless, so one instance per endpoint serves every call at once."""

    __slots__ = ("_gauges",)

    def __init__(self, gauges: tuple[_Add, ...]):
        self._gauges = gauges

    def __enter__(self) -> None:
        with _lock:
            for gauge in self._gauges:
                gauge.amount += 1

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            for gauge in self._gauges:
                gauge.amount -= 1


_in_flight: dict[tuple[str, bool], _InFlight] = {}


def in_flight(endpoint: str, *, stream: bool = False) -> _InFlight:
    """`with metrics.in_flight("chat/completions", stream=True): ...`"""
    key = (_endpoint(endpoint), stream)
    counter = _in_flight.get(key)
    if counter is None:
        label = key[0]
        with _lock:
            gauges = (_add(requests_in_flight, label),) + ((_add(streams_in_flight, label),) if stream else ())
            counter = _in_flight[key] = _InFlight(gauges)
        _start_flusher()
    return counter


def upstream_result(endpoint_label: str, ok: bool, latency_s: float) -> None:
    """One call to an upstream endpoint (its base URL, or a label from `upstream_label`)."""
    key = (_upstream(endpoint_label), ok)
    pending = _upstreams.get(key)
    if pending is None:
        with _lock:
            pending = _upstreams[key] = (
                _add(upstream_requests_total, key[0], "ok" if ok else "error"),
                _observe(upstream_duration, key[0]),
            )
        _start_flusher()
    with _lock:
        pending[0].amount += 1
        pending[1].add(latency_s)


def upstream_health(endpoint_label: str, healthy: bool) -> None:
    """An endpoint was taken out of service (False) or put back (True) in this worker.
    Rare, so written at once."""
    upstream_healthy.labels(_upstream(endpoint_label)).set(1 if healthy else 0)


_fail_open = _add(limiter_fail_open_total)
_settlement_retries = _add(settlement_retries_total)


def limiter_fail_open() -> None:
    _start_flusher()
    with _lock:
        _fail_open.amount += 1


def settlement_retry() -> None:
    _start_flusher()
    with _lock:
        _settlement_retries.amount += 1


def written_off(micros: int) -> None:
    """Rare (an image larger than DOS_AI_IMAGE_PART_TOKENS, an upstream that over-reports): written at once."""
    written_off_total.inc(micros)


def hold_recovered() -> None:
    recovered_holds_total.inc()


SPOOL_OPERATIONS = frozenset({"keep", "done", "refused", "adopt", "check"})


def keys_seen_in_prompt(count: int) -> None:
    """Keys found in a call's body (dosportal.v1.keyscan). Rare: written at once."""
    keys_seen_in_prompts_total.inc(count)


def settlement_refused() -> None:
    """Rare (a settlement the database refuses): written at once."""
    settlements_refused_total.inc()


def spool_write_failed(operation: str) -> None:
    """The spool could not be written (`operation`: keep, done, refused, adopt, or /healthz's check).
    Rare: written at once."""
    spool_write_failures_total.labels(operation if operation in SPOOL_OPERATIONS else "other").inc()


def _forget_dead_workers() -> None:
    """Live gauges of a worker that died without cleaning up would count forever."""
    for path in glob.glob(os.path.join(MULTIPROC_DIR, "gauge_live*_*.db")):
        pid_text = path.rsplit("_", 1)[1].removesuffix(".db")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, MULTIPROC_DIR)
        except PermissionError:
            pass  # alive, another user's


def exposition(encoder: Callable[[CollectorRegistry], bytes] = generate_latest) -> bytes:
    """Every worker's metrics, summed, in Prometheus text format (or the format of `encoder`)."""
    flush()
    _forget_dead_workers()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return encoder(registry)


@csrf_exempt
@require_safe
def view(request: HttpRequest) -> HttpResponse:
    """`/metrics`: 404 while DOS_AI_METRICS_TOKEN is unset, 401 without that Bearer token."""
    token = settings.DOS_AI_METRICS_TOKEN
    if not token:
        return HttpResponse("Not found\n", status=404, content_type="text/plain; charset=utf-8")
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), token.encode()):
        metrics_scrapes_total.labels("unauthorized").inc()
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    metrics_scrapes_total.labels("ok").inc()
    # Prometheus asks for the format it prefers (OpenMetrics, or the newer text format).
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(exposition(encoder), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


# At exit: the last amounts are written; then a worker's live gauges go with it (atexit
# runs these last-registered first).
atexit.register(mark_process_dead, os.getpid(), MULTIPROC_DIR)
atexit.register(flush)
