"""The Vercel AI SDK's default provider (`openai("dos-ai")` → /v1/responses) through the gateway.

The npm packages are installed (pinned in tests/node/package.json) into test-artifacts/ once per
machine; the test is skipped, saying why, where `node` and `npm` are absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from billing.models import UsageRecord
from dosportal.testing.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY_WORDS

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = Path(__file__).parent / "node"
INSTALL = Path(__file__).resolve().parents[3] / "test-artifacts" / "node-ai-sdk"


@pytest.fixture(scope="session")
def ai_sdk() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed: the Vercel AI SDK check needs them (apt-get install nodejs npm)")
    INSTALL.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "check.mjs"):
        shutil.copy(SOURCE / name, INSTALL / name)
    if not (INSTALL / "node_modules" / "@ai-sdk" / "openai").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=INSTALL, check=True, timeout=300)
    return INSTALL


def test_generate_text_and_stream_text_work_unchanged(ai_sdk, gateway, api_key, served_models, fake_upstream):
    result = subprocess.run(
        ["node", "check.mjs", f"{gateway.url}/v1", api_key],
        cwd=ai_sdk,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"text": "".join(REPLY_WORDS), "input": PROMPT_TOKENS, "output": COMPLETION_TOKENS}
    assert seen == {"generated": expected, "streamed": expected}
    assert [r.endpoint for r in UsageRecord.objects.order_by("id")] == ["responses", "responses"]
    assert [r.streamed for r in UsageRecord.objects.order_by("id")] == [False, True]
