"""Logging: raw API keys never reach a log line, and `LOG_FORMAT=json` gives one JSON object per line.

`logging_config()` builds the `LOGGING` dict of the settings. It puts `RedactKeys` on every
handler it configures, including the ones it gives uvicorn's `uvicorn.error` and
`uvicorn.access` loggers (Django applies `LOGGING` after uvicorn has set up its own
logging, so these replace uvicorn's handlers in every worker). A filter on a handler sees
every record that handler emits, propagated ones included; a filter on a logger would not.

The gateway logs one line per /v1 call with `log_api_call(logger, **fields)`. Started with
`--log-config deploy/uvicorn-logging.json`, uvicorn's parent process uses these too, so even
its first lines are redacted and in the LOG_FORMAT.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

# A key is `dos_sk_` + 32 base62 characters. Anything longer than the 4 characters a key's
# hint shows (`dos_sk_AbCd…wXyZ`) is redacted, so a truncated or mistyped key is too.
KEY_RE = re.compile(r"(?i:dos_sk_)[A-Za-z0-9]{5,}")
REDACTED = "dos_sk_[redacted]"

# Record attributes a JSON line carries when present (set with `extra=` or `log_api_call`).
FIELDS = (
    "request_id",
    "client_request_id",
    "key_hint",
    "user_id",
    "endpoint",
    "method",
    "path",
    "model",
    "stream",
    "status",
    "code",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "charged_micros",
    "upstream",
)
# Attributes every LogRecord has: `extra=` may not use them.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return KEY_RE.sub(REDACTED, text) if "_" in text else text


class RedactKeys(logging.Filter):
    """Replace anything shaped like an API key in a record's message, arguments, exception,
    stack and known fields. The message is rendered here (arguments of any type, however
    they format) and the record keeps only the redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's access line: (client, method, path with query, HTTP version, status).
            record.status = record.args[4]
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = redact(value)
        return True


class TextFormatter(logging.Formatter):
    """The human-readable default; the whole line is redacted once more as it leaves."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the known
    fields that the record carries, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return redact(json.dumps(line, default=str, ensure_ascii=False))


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def logging_config(*, level: str, log_format: str) -> dict[str, Any]:
    """The settings' LOGGING. Read at settings import, which under uvicorn happens after
    uvicorn configured its loggers: when it was started with `--no-access-log`, the access
    logger stays silent (uvicorn logs access lines only while that logger has a handler)."""
    access = logging.getLogger("uvicorn.access")
    access_log_off = not access.propagate and not access.handlers
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_keys": {"()": RedactKeys}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["redact_keys"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own defaults print `django` records a second time (DEBUG on) or mail them
            # (ADMINS set), past this filter: everything goes through the root handler instead.
            "django": {"handlers": [], "propagate": True},
            "django.server": {"handlers": ["console"], "propagate": False},
            "django.db.backends": {"level": "WARNING"},
            # uvicorn's levels (--log-level) are kept: no "level" here.
            "uvicorn": {"handlers": ["console"], "propagate": False},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [] if access_log_off else ["console"], "propagate": False},
        },
    }


def formatter_from_environment() -> logging.Formatter:
    """For uvicorn's `--log-config deploy/uvicorn-logging.json`, which formats uvicorn's parent
    process (before any worker loads the settings) as LOG_FORMAT says."""
    return JsonFormatter() if os.environ.get("LOG_FORMAT", "").strip().lower() == "json" else TextFormatter()


def log_api_call(logger: logging.Logger, **fields: Any) -> None:
    """One line per /v1 call: INFO, or ERROR for a 5xx. Known fields (see FIELDS) become
    attributes of the record (JSON keys); the text line names them too.

    e.g. log_api_call(logger, request_id=..., key_hint=..., user_id=..., endpoint="chat/completions",
    model="dos-ai", status=200, latency_ms=42, prompt_tokens=11, completion_tokens=6)
    """
    status = fields.get("status")
    level = logging.ERROR if isinstance(status, int) and status >= 500 else logging.INFO
    if not logger.isEnabledFor(level):
        return
    extra = {(name if name not in _RESERVED else f"{name}_"): value for name, value in fields.items()}
    logger.log(level, "api call %s", _describe(fields), extra=extra)


def _describe(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in fields.items() if value is not None)
