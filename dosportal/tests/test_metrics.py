"""/metrics: Bearer DOS_AI_METRICS_TOKEN or nothing, Prometheus text, every worker summed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from django.test import Client
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from dosportal import metrics
from dosportal.testing.gateway import Gateway

TOKEN = "metrics-token-for-tests-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _token(settings: Settings) -> None:
    settings.DOS_AI_METRICS_TOKEN = TOKEN


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client | None = None) -> Samples:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- Access ---------------------------------------------------------------------------------


def test_metrics_are_off_when_no_token_is_set(settings: Settings) -> None:
    settings.DOS_AI_METRICS_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert (response.status_code, response.content) == (404, b"Not found\n")


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Token {TOKEN}", "Bearer é"],
)
def test_metrics_need_the_bearer_token(authorization: str | None) -> None:
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", **headers)

    assert (response.status_code, response.content) == (401, b"Unauthorized\n")
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_metrics_answer_the_token_without_a_login_or_csrf_token() -> None:
    response = Client(enforce_csrf_checks=True).get("/metrics", HTTP_AUTHORIZATION=f"bearer  {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert Client().head("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_speak_openmetrics_to_a_scraper_that_asks_for_it() -> None:
    metrics.settlement_retry()
    response = Client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.content.endswith(b"# EOF\n")
    assert b"dos_ai_settlement_retries_total " in response.content


def test_metrics_refuse_other_methods() -> None:
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


def test_refused_scrapes_are_counted() -> None:
    before = scrape()
    Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
    after = scrape()
    assert value(after, "dos_ai_metrics_scrapes_total", result="unauthorized") == (
        value(before, "dos_ai_metrics_scrapes_total", result="unauthorized") + 1
    )
    assert value(after, "dos_ai_metrics_scrapes_total", result="ok") == (
        value(before, "dos_ai_metrics_scrapes_total", result="ok") + 1
    )


# --- What the gateway reports -------------------------------------------------------------------


def test_a_finished_call_counts_its_request_latency_tokens_and_money() -> None:
    before = scrape()
    metrics.call_finished(
        endpoint="chat/completions", model="dos-ai", status=200, latency_s=0.42, ttft_s=0.07,
        prompt_tokens=120, completion_tokens=300, charged_micros=510,
    )  # fmt: skip
    metrics.call_finished(endpoint="chat/completions", model="dos-ai", status=502, code="upstream_unavailable",
                          latency_s=3.0)  # fmt: skip
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": "chat/completions", "model": "dos-ai", "status": "200", "code": ""}
    failed = {**ok, "status": "502", "code": "upstream_unavailable"}
    timing = {"endpoint": "chat/completions", "model": "dos-ai"}
    assert delta("dos_ai_requests_total", **ok) == 1
    assert delta("dos_ai_requests_total", **failed) == 1
    assert delta("dos_ai_request_duration_seconds_count", **timing) == 2
    assert delta("dos_ai_request_duration_seconds_sum", **timing) == pytest.approx(3.42)
    assert delta("dos_ai_request_duration_seconds_bucket", **timing, le="0.25") == 0
    assert delta("dos_ai_request_duration_seconds_bucket", **timing, le="0.5") == 1
    assert delta("dos_ai_request_duration_seconds_bucket", **timing, le="5.0") == 2
    assert delta("dos_ai_request_duration_seconds_bucket", **timing, le="+Inf") == 2
    assert delta("dos_ai_time_to_first_token_seconds_count", **timing) == 1
    assert delta("dos_ai_time_to_first_token_seconds_bucket", **timing, le="0.1") == 1
    assert delta("dos_ai_prompt_tokens_total", model="dos-ai") == 120
    assert delta("dos_ai_completion_tokens_total", model="dos-ai") == 300
    assert delta("dos_ai_charged_micro_usd_total", model="dos-ai") == 510


def test_a_nan_duration_is_not_observed() -> None:
    before = scrape()
    metrics.call_finished(endpoint="embeddings", model="dos-ai-embed", status=200, latency_s=float("nan"))
    after = scrape()
    timing = {"endpoint": "embeddings", "model": "dos-ai-embed"}
    assert value(after, "dos_ai_request_duration_seconds_count", **timing) == value(
        before, "dos_ai_request_duration_seconds_count", **timing
    )
    assert value(after, "dos_ai_request_duration_seconds_sum", **timing) == value(
        before, "dos_ai_request_duration_seconds_sum", **timing
    )


def test_refusals_are_counted_by_reason_and_status() -> None:
    before = scrape()
    metrics.refused(reason="invalid_api_key")
    metrics.refused(reason="insufficient_balance")
    metrics.refused(reason="rate_limit_exceeded")
    metrics.refused(reason="rate_limit_exceeded")
    metrics.refused(reason="some_new_reason", status=418)
    after = scrape()

    for reason, status, count in [
        ("invalid_api_key", "401", 1),
        ("insufficient_balance", "402", 1),
        ("rate_limit_exceeded", "429", 2),
        ("some_new_reason", "418", 1),
    ]:
        labels = {"reason": reason, "status": status}
        assert value(after, "dos_ai_refusals_total", **labels) - value(before, "dos_ai_refusals_total", **labels) == (
            count
        )


def test_requests_and_streams_in_flight_are_gauges() -> None:
    with metrics.in_flight("chat/completions", stream=True), metrics.in_flight("embeddings"):
        during = scrape()
    after = scrape()

    assert value(during, "dos_ai_requests_in_flight", endpoint="chat/completions") == 1
    assert value(during, "dos_ai_streams_in_flight", endpoint="chat/completions") == 1
    assert value(during, "dos_ai_requests_in_flight", endpoint="embeddings") == 1
    assert value(during, "dos_ai_streams_in_flight", endpoint="embeddings") == 0
    assert value(after, "dos_ai_requests_in_flight", endpoint="chat/completions") == 0
    assert value(after, "dos_ai_streams_in_flight", endpoint="chat/completions") == 0


def test_upstream_results_health_fail_open_and_settlement_retries() -> None:
    before = scrape()
    metrics.upstream_result("http://vllm-a:8000/v1", True, 0.2)
    metrics.upstream_result("http://vllm-a:8000/v1", False, 5.0)
    metrics.upstream_health("http://vllm-a:8000/v1", False)
    metrics.limiter_fail_open()
    metrics.settlement_retry()
    metrics.settlement_retry()
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    upstream = "vllm-a:8000/v1"
    assert delta("dos_ai_upstream_requests_total", upstream=upstream, outcome="ok") == 1
    assert delta("dos_ai_upstream_requests_total", upstream=upstream, outcome="error") == 1
    assert delta("dos_ai_upstream_duration_seconds_count", upstream=upstream) == 2
    assert value(after, "dos_ai_upstream_healthy", upstream=upstream) == 0
    assert delta("dos_ai_limiter_fail_open_total") == 1
    assert delta("dos_ai_settlement_retries_total") == 2

    metrics.upstream_health("http://vllm-a:8000/v1", True)
    assert value(scrape(), "dos_ai_upstream_healthy", upstream=upstream) == 1


def test_label_values_are_bounded_and_never_carry_credentials() -> None:
    metrics.call_finished(endpoint="admin/../x", model="bad model\n{}", status=404, code="Not A Code!", latency_s=0.01)
    metrics.upstream_result("https://user:secret@gpu-1.internal:8443/v1/?token=abc", True, 0.1)
    samples = scrape()

    assert value(samples, "dos_ai_requests_total", endpoint="other", model="other", status="404", code="other") >= 1
    assert value(samples, "dos_ai_upstream_requests_total", upstream="gpu-1.internal:8443/v1", outcome="ok") >= 1
    body = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content
    # (Live test gateways share this run's metrics directory: a served model may well be called
    # "dos-secret" there, so look for the credentials themselves.)
    assert b"user:secret" not in body and b"token=abc" not in body and b"bad model" not in body


def test_a_flood_of_model_names_ends_in_one_other_label() -> None:
    for index in range(300):
        metrics.call_finished(endpoint="chat/completions", model=f"made-up-{index}", status=404, latency_s=0.001)
    models = {dict(labels)["model"] for name, labels in scrape() if name == "dos_ai_requests_total"}
    # Other tests in this process may have reported calls of real models ("" or "dos-ai") first.
    assert len({model for model in models if model.startswith("made-up-")}) <= 100
    assert "other" in models


def test_the_gauges_of_a_worker_that_died_are_forgotten() -> None:
    code = (
        "import os; from dosportal import metrics\n"
        "metrics.in_flight('completions', stream=True).__enter__(); metrics.flush(); print(os.getpid()); os._exit(0)"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": metrics.MULTIPROC_DIR,
        "DJANGO_SETTINGS_MODULE": "dosportal.settings",
    }
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    assert (Path(metrics.MULTIPROC_DIR) / f"gauge_livesum_{dead_pid}.db").exists()

    samples = scrape()

    assert value(samples, "dos_ai_requests_in_flight", endpoint="completions") == 0
    assert not (Path(metrics.MULTIPROC_DIR) / f"gauge_livesum_{dead_pid}.db").exists()


# --- Several workers -----------------------------------------------------------------------------


def scrapes_answered_by_each_worker(directory: str) -> dict[str, float]:
    """pid -> scrapes that worker answered, read from its own file."""
    answered = {}
    for path in Path(directory).glob("counter_*.db"):
        for key, count, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[:2] == ["dos_ai_metrics_scrapes", "dos_ai_metrics_scrapes_total"] and '"ok"' in key:
                answered[path.stem.rsplit("_", 1)[1]] = count
    return {pid: count for pid, count in answered.items() if count}


@pytest.mark.django_db(transaction=True)
def test_two_workers_report_one_summed_set(gateway_factory: Callable[..., Gateway]) -> None:
    directory = tempfile.mkdtemp(prefix="metrics-two-workers-")
    gateway = gateway_factory(workers=2, DOS_AI_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=directory)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    # A new connection per request, until each worker has answered some scrapes itself.
    scrapes, refused = 0, 0
    for _ in range(400):
        if httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401:
            refused += 1
        response = httpx.get(f"{gateway.url}/metrics", headers=headers)
        assert response.status_code == 200
        scrapes += 1
        if len(scrapes_answered_by_each_worker(directory)) == 2 and scrapes >= 10:
            break
    assert len(scrapes_answered_by_each_worker(directory)) == 2, "one worker answered every scrape"

    samples = parse(httpx.get(f"{gateway.url}/metrics", headers=headers).text)

    assert value(samples, "dos_ai_metrics_scrapes_total", result="ok") == scrapes + 1
    assert value(samples, "dos_ai_metrics_scrapes_total", result="unauthorized") == refused
