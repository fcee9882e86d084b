"""Logs: no raw key in any record (access log included), LOG_FORMAT=json, one line per /v1 call."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.conf import settings

from apikeys.keys import generate_key, key_hint
from dosportal.logfilters import JsonFormatter, RedactKeys, TextFormatter, log_api_call, logging_config, redact
from dosportal.testing.gateway import Gateway
from dosportal.tests.test_settings import run_django

KEY = generate_key()


@pytest.fixture
def emit() -> Callable[..., str]:
    """Log one record through a handler set up like the settings' and return what it wrote."""

    def emit_one(log: Callable[[logging.Logger], None], formatter: logging.Formatter | None = None) -> str:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RedactKeys())
        handler.setFormatter(formatter or TextFormatter())
        logger = logging.getLogger("dosportal.tests.redaction")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            log(logger)
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
        return stream.getvalue()

    return emit_one


class Secretive:
    def __str__(self) -> str:
        return f"<client with {KEY}>"


# --- The filter ------------------------------------------------------------------------


def test_a_key_is_redacted_wherever_it_appears_in_a_record(emit: Callable[..., str]) -> None:
    def log(logger: logging.Logger) -> None:
        logger.warning(f"in the message {KEY}")
        logger.warning("in an argument %s", KEY)
        logger.warning("in an object %s and a dict %r", Secretive(), {"api_key": KEY})
        logger.warning("in named arguments %(key)s", {"key": KEY})
        logger.warning("in a stack", stack_info=True, extra={"path": f"/v1/models?api_key={KEY}"})
        try:
            raise ValueError(f"Invalid key {KEY}")
        except ValueError:
            logger.exception("in an exception")

    written = emit(log)

    assert KEY not in written
    assert KEY[7:] not in written
    # message, argument, object, dict, named argument, exception (the stack shows source, not values)
    assert written.count("dos_sk_[redacted]") == 6
    assert "ValueError: Invalid key dos_sk_[redacted]" in written


def test_fragments_of_a_key_are_redacted_but_a_key_hint_is_kept() -> None:
    assert redact(f"cut off: {KEY[:20]}") == "cut off: dos_sk_[redacted]"
    assert redact(f"shouted: {KEY.upper()}") == "shouted: dos_sk_[redacted]"
    assert redact(f"hint {key_hint(KEY)}") == f"hint {key_hint(KEY)}"
    assert redact("dos_sk_ and dos_sk_abcd") == "dos_sk_ and dos_sk_abcd"
    assert redact("nothing here") == "nothing here"


def test_a_record_whose_format_fails_is_still_written_redacted(emit: Callable[..., str]) -> None:
    written = emit(lambda logger: logger.warning("two %s %s", KEY))
    assert KEY not in written
    assert "two %s %s ('dos_sk_[redacted]',)" in written


# --- JSON lines ----------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_the_known_fields(emit: Callable[..., str]) -> None:
    written = emit(
        lambda logger: logger.info(
            "served", extra={"request_id": "req_1", "status": 200, "latency_ms": 12, "unrelated": "x"}
        ),
        JsonFormatter(),
    )

    line = json.loads(written)
    assert set(line) == {"time", "level", "logger", "message", "request_id", "status", "latency_ms"}
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "dosportal.tests.redaction", "served")
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    assert written.count("\n") == 1


def test_a_json_line_has_the_exception_and_no_key(emit: Callable[..., str]) -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise RuntimeError(f"upstream said {KEY}")
        except RuntimeError:
            logger.exception("failed", extra={"path": f"/v1/x?key={KEY}"})

    written = emit(log, JsonFormatter())

    line = json.loads(written)
    assert line["level"] == "ERROR"
    assert line["exception"].endswith("RuntimeError: upstream said dos_sk_[redacted]")
    assert line["path"] == "/v1/x?key=dos_sk_[redacted]"
    assert KEY not in written and written.count("\n") == 1


def test_log_api_call_writes_one_line_with_every_field(emit: Callable[..., str]) -> None:
    fields = {
        "request_id": "req_42",
        "key_hint": key_hint(KEY),
        "user_id": 7,
        "endpoint": "chat/completions",
        "model": "dos-ai",
        "status": 200,
        "latency_ms": 31,
        "prompt_tokens": 11,
        "completion_tokens": 6,
    }

    line = json.loads(emit(lambda logger: log_api_call(logger, **fields), JsonFormatter()))
    text = emit(lambda logger: log_api_call(logger, **fields))

    assert {name: line[name] for name in fields} == fields
    assert (line["level"], line["message"].split(" ")[:2]) == ("INFO", ["api", "call"])
    assert text.split(" ", 4)[2:] == [
        "INFO",
        "dosportal.tests.redaction",
        f"api call request_id=req_42 key_hint={key_hint(KEY)} user_id=7 endpoint=chat/completions model=dos-ai "
        "status=200 latency_ms=31 prompt_tokens=11 completion_tokens=6\n",
    ]


def test_log_api_call_logs_a_server_error_as_error_and_survives_reserved_names(emit: Callable[..., str]) -> None:
    line = json.loads(
        emit(lambda logger: log_api_call(logger, status=502, code="upstream_unavailable", name="x"), JsonFormatter())
    )
    assert (line["level"], line["status"], line["code"]) == ("ERROR", 502, "upstream_unavailable")


# --- The settings ------------------------------------------------------------------------


@pytest.fixture
def uvicorn_access_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("uvicorn.access")
    handlers, propagate = logger.handlers[:], logger.propagate
    yield logger
    logger.handlers, logger.propagate = handlers, propagate


def test_the_config_sends_uvicorn_logs_through_the_redacting_handler(uvicorn_access_logger: logging.Logger) -> None:
    config = logging_config(level="INFO", log_format="json")

    assert config["handlers"]["console"] == {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["redact_keys"],
    }
    assert config["loggers"]["uvicorn.access"] == {"handlers": ["console"], "propagate": False}
    assert config["loggers"]["uvicorn"] == {"handlers": ["console"], "propagate": False}
    assert config["loggers"]["django"] == {"handlers": [], "propagate": True}


def test_the_config_keeps_uvicorns_access_log_off_when_it_was_turned_off(
    uvicorn_access_logger: logging.Logger,
) -> None:
    # What `uvicorn --no-access-log` does before the app (and so the settings) is loaded.
    uvicorn_access_logger.handlers, uvicorn_access_logger.propagate = [], False

    config = logging_config(level="INFO", log_format="text")

    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": False}


def test_the_test_run_logs_through_the_redacting_handler() -> None:
    assert settings.LOG_FORMAT == "text"
    handler = next(h for h in logging.getLogger().handlers if isinstance(h.formatter, TextFormatter))
    assert any(isinstance(f, RedactKeys) for f in handler.filters)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_FORMAT": "xml"}, "ImproperlyConfigured: LOG_FORMAT must be one of text, json; got 'xml'"),
        ({"LOG_LEVEL": "loud"}, "ImproperlyConfigured: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_a_bad_log_setting_stops_the_process_at_start_up(env: dict[str, str], message: str) -> None:
    result = run_django(env, "check")
    assert result.returncode == 1
    assert message in result.stderr


def test_log_settings_are_read_without_regard_to_case() -> None:
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'dosportal.settings'; import django; django.setup();"
        "import logging; from django.conf import settings;"
        "print(settings.LOG_FORMAT, settings.LOG_LEVEL, logging.getLevelName(logging.getLogger().level))"
    )
    result = run_django({"LOG_FORMAT": "JSON", "LOG_LEVEL": "warning"}, "-c", code)
    assert result.stdout == "json WARNING WARNING\n", result.stderr


# --- A live server --------------------------------------------------------------------------------


def requests_with_a_key(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.get(f"/v1/models?api_key={KEY}").status_code == 401
        assert client.get(f"/healthz?api_key={KEY}&x={KEY[:12]}").status_code == 200
        assert client.get(f"/v1/models/{KEY}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        assert client.get(f"/no/such/page/{KEY}").status_code == 404


def wait_for_access_lines(gateway: Gateway, count: int) -> str:
    """The logs once `count` access lines of the requests above (those with a key) are in."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = gateway.logs()
        if len(re.findall(r"dos_sk_\[redacted\][^\n]* HTTP/1\.1", logs)) >= count:
            return logs
        time.sleep(0.05)
    return gateway.logs()


@pytest.mark.django_db(transaction=True)
def test_uvicorns_access_log_never_shows_a_key(gateway_factory: Callable[..., Gateway]) -> None:
    # Started as `make run` does, without a log config: the settings' LOGGING alone.
    gateway = gateway_factory(access_log=True, LOG_LEVEL="INFO")

    requests_with_a_key(gateway)

    logs = wait_for_access_lines(gateway, 4)
    assert KEY not in logs and KEY[7:19] not in logs, logs
    assert '"GET /v1/models?api_key=dos_sk_[redacted] HTTP/1.1" 401' in logs
    assert '"GET /healthz?api_key=dos_sk_[redacted]&x=dos_sk_[redacted] HTTP/1.1" 200' in logs
    assert '"GET /v1/models/dos_sk_[redacted] HTTP/1.1" 401' in logs
    assert "WARNING django.request Not Found: /no/such/page/dos_sk_[redacted]" in logs
    # /v1 refusals are the gateway's own call log lines, not also Django's request warnings.
    assert "django.request Unauthorized" not in logs
    assert "api call request_id=req_" in logs and "status=401" in logs


@pytest.mark.django_db(transaction=True)
def test_with_log_format_json_uvicorn_writes_json_lines_only(gateway_factory: Callable[..., Gateway]) -> None:
    # As deploy/ starts it: the log config formats uvicorn's parent process too.
    gateway = gateway_factory(
        workers=2, access_log=True, uvicorn_args=("--log-config", "deploy/uvicorn-logging.json"),
        LOG_FORMAT="json", LOG_LEVEL="INFO",
    )  # fmt: skip

    requests_with_a_key(gateway)

    logs = wait_for_access_lines(gateway, 4)
    assert KEY not in logs and KEY[7:19] not in logs, logs
    records = [json.loads(line) for line in logs.splitlines()]
    assert any(record["message"].startswith("Started parent process") for record in records)
    assert sum(record["message"].startswith("Started server process") for record in records) == 2
    access = [r for r in records if r["logger"] == "uvicorn.access" and "/healthz HTTP" not in r["message"]]
    assert sorted(record["status"] for record in access) == [200, 401, 401, 404]
    assert {record["level"] for record in access} == {"INFO"}
    expected = '"GET /v1/models?api_key=dos_sk_[redacted] HTTP/1.1" 401'
    assert any(record["message"].endswith(expected) for record in access)
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)


def test_the_redaction_test_key_is_well_formed() -> None:
    assert KEY.startswith("dos_sk_") and len(KEY) == 39
    assert sys.modules["dosportal.logfilters"].KEY_RE.fullmatch(KEY)
