"""Each /v1 call leaves one structured log line and its metrics, with no raw key anywhere."""

from __future__ import annotations

import json
import tempfile
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests"
CHAT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}


@pytest.fixture
def observed(gateway_factory):
    return gateway_factory(
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        DOS_AI_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="dos-metrics-"),
    )


def samples(gateway) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_served_call_and_a_refusal_each_log_one_json_line_and_count_in_metrics(
    observed, api_key, served_models, fake_upstream
):
    headers = {"Authorization": f"Bearer {api_key}"}
    served = httpx.post(f"{observed.url}/v1/chat/completions", json=CHAT, headers=headers)
    refused = httpx.post(f"{observed.url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
    time.sleep(1.5)  # metrics reach the shared files within a second

    lines = [json.loads(line) for line in observed.logs().splitlines() if line.startswith("{")]
    calls = {line.get("request_id"): line for line in lines if line["message"].startswith("api call")}
    served_line = calls[served.headers["x-request-id"]]
    refused_line = calls[refused.headers["x-request-id"]]
    assert (served.status_code, refused.status_code) == (200, 401)
    assert served_line["level"] == "INFO"
    assert served_line["status"] == 200
    assert (served_line["endpoint"], served_line["model"]) == ("chat/completions", "dos-ai")
    assert (served_line["prompt_tokens"], served_line["completion_tokens"]) == (11, 6)
    assert served_line["key_hint"].startswith("dos_sk_") and "…" in served_line["key_hint"]
    assert (refused_line["status"], refused_line["code"]) == (401, "invalid_api_key")
    assert api_key not in observed.logs()

    found = samples(observed)
    labels = {"endpoint": "chat/completions", "model": "dos-ai", "status": "200", "code": ""}
    assert found[("dos_ai_requests_total", frozenset(labels.items()))] >= 1
    assert found[("dos_ai_prompt_tokens_total", frozenset({"model": "dos-ai"}.items()))] >= 11
    refusal = {"reason": "invalid_api_key", "status": "401"}
    assert found[("dos_ai_refusals_total", frozenset(refusal.items()))] >= 1
