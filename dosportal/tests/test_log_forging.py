"""No logged value can forge a log line: control characters are escaped in both formats
(dosportal.logfilters.escape_controls), checked on the formatters and against a live uvicorn."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable

import httpx
import pytest

from dosportal.logfilters import JsonFormatter, RedactKeys, TextFormatter, log_api_call
from dosportal.testing.gateway import Gateway

FORGED = "2026-12-02 06:00:00,000 ERROR dosportal.security x"
# Each control character, as sent and as it must appear in the log.
CONTROLS = {
    "\n": "\\n",
    "\r": "\\r",
    "\x1b": "\\x1b",
    "\x08": "\\x08",
    "\x00": "\\x00",
    "\x7f": "\\x7f",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def emit(log: Callable[[logging.Logger], None], formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactKeys())
    handler.setFormatter(formatter)
    logger = logging.getLogger("dosportal.tests.forging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


@pytest.mark.parametrize("char", CONTROLS, ids=[repr(char) for char in CONTROLS])
def test_a_text_line_shows_each_control_character_escaped(char: str) -> None:
    written = emit(
        lambda logger: log_api_call(logger, path=f"/v1/x{char}{FORGED}", model=f"m{char}", request_id=f"r{char}"),
        TextFormatter(),
    )

    assert written.count("\n") == 1 and written.endswith("\n")
    escaped = CONTROLS[char]
    assert f" path=/v1/x{escaped}{FORGED} model=m{escaped} request_id=r{escaped}\n" in written
    assert char not in written.removesuffix("\n")


@pytest.mark.parametrize("char", CONTROLS, ids=[repr(char) for char in CONTROLS])
def test_a_json_line_is_valid_json_with_each_control_character_escaped(char: str) -> None:
    written = emit(
        lambda logger: log_api_call(logger, path=f"/v1/x{char}{FORGED}", model=f"m{char}", request_id=f"r{char}"),
        JsonFormatter(),
    )

    assert written.count("\n") == 1
    assert char not in written.removesuffix("\n")
    record = json.loads(written)
    escaped = CONTROLS[char]
    assert (record["path"], record["model"], record["request_id"]) == (
        f"/v1/x{escaped}{FORGED}",
        f"m{escaped}",
        f"r{escaped}",
    )


def test_a_forged_line_inside_an_exception_is_indented_under_its_record() -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError(f"bad path /v1/x\n{FORGED}\r\x1b[2J")
        except ValueError:
            logger.exception("failed on %s", "/v1/x\nFORGE")

    lines = emit(log, TextFormatter()).splitlines()
    as_json = json.loads(emit(log, JsonFormatter()))

    assert lines[0].endswith(" ERROR dosportal.tests.forging failed on /v1/x\\nFORGE")
    assert all(line.startswith("  ") for line in lines[1:])
    assert f"  {FORGED}\\r\\x1b[2J" in lines
    assert as_json["message"] == "failed on /v1/x\\nFORGE"
    assert as_json["exception"].endswith(f"ValueError: bad path /v1/x\n{FORGED}\\r\\x1b[2J")


# --- A live server --------------------------------------------------------------------------------


def lines_with(gateway: Gateway, marker: str, count: int) -> list[str]:
    """The log lines that mention `marker`, once `count` of them are in."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [line for line in gateway.logs().splitlines() if marker in line]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return [line for line in gateway.logs().splitlines() if marker in line]


@pytest.mark.django_db(transaction=True)
def test_a_path_cannot_forge_a_text_log_line(gateway_factory: Callable[..., Gateway]) -> None:
    # The same server as test_logging's access-log test.
    gateway = gateway_factory(access_log=True, LOG_LEVEL="INFO")

    response = httpx.get(f"{gateway.url}/v1/FORGE1%0A2026-12-02%2006:00:00,000%20ERROR%20dosportal.security%20x")
    other = httpx.get(f"{gateway.url}/v1/FORGE2%0D%1B[2J%08x")

    assert (response.status_code, other.status_code) == (404, 404)
    first, second = lines_with(gateway, "FORGE1", 2), lines_with(gateway, "FORGE2", 2)
    # One line from the gateway and one (percent-encoded by uvicorn) access line, for each request.
    assert [line for line in first if "dosportal.v1.gateway" in line] == [
        next(line for line in first if f"path=/v1/FORGE1\\n{FORGED} status=404" in line)
    ]
    assert [line for line in second if "dosportal.v1.gateway" in line] == [
        next(line for line in second if "path=/v1/FORGE2\\r\\x1b[2J\\x08x status=404" in line)
    ]
    assert len([line for line in first + second if "uvicorn.access" in line]) == 2
    logs = gateway.logs()
    assert not re.search(r"^2026-12-02 06:00:00,000", logs, re.MULTILINE)
    assert "\x1b" not in logs and "\r" not in logs and "\x08" not in logs


@pytest.mark.django_db(transaction=True)
def test_a_path_cannot_break_a_json_log_line(gateway_factory: Callable[..., Gateway]) -> None:
    # Not test_logging's JSON server: that test counts its access lines.
    gateway = gateway_factory(access_log=True, LOG_FORMAT="json", LOG_LEVEL="INFO")

    response = httpx.get(f"{gateway.url}/v1/FORGE3%E2%80%A8%0A%C2%85x")

    assert response.status_code == 404
    found = lines_with(gateway, "FORGE3", 2)
    assert all("\u2028" not in line and "\x85" not in line for line in found)
    records = [json.loads(line) for line in gateway.logs().splitlines()]
    calls = [record for record in records if record["logger"] == "dosportal.v1.gateway" and "FORGE3" in record["path"]]
    assert [record["path"] for record in calls] == ["/v1/FORGE3\\u2028\\n\\x85x"]
