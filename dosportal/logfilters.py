r"""Logging: raw API keys never reach a log line, and `LOG_FORMAT=json` gives one JSON object per line.

`logging_config()` builds the `LOGGING` dict of the settings. It puts `RedactKeys` on every
handler it configures, including the ones it gives uvicorn's `uvicorn.error` and
`uvicorn.access` loggers (Django applies `LOGGING` after uvicorn has set up its own
logging, so these replace uvicorn's handlers in every worker). A filter on a handler sees
every record that handler emits, propagated ones included; a filter on a logger would not.

No value can forge a line. Both formatters escape control characters — C0 (newline, CR, ESC,
BS…), DEL, C1 and the Unicode line/paragraph separators U+2028/U+2029 — in every value they
write (`escape_controls`: a newline → `\n`, ESC → `\x1b`, U+2028 → `\u2028`), so a request for
`/v1/FORGE%0A2026-12-02 06:00:00,000 ERROR …` stays on its own line. A record is one line, but
for a traceback or stack: in the text format its lines follow the record's, each indented by
two spaces (so only a record's first line ever starts with a timestamp), with the same escapes
within each line; in JSON it is one string field. JSON lines also carry DEL, C1 and U+2028/9 as
`\uXXXX` escapes, never raw (json.dumps with ensure_ascii=False would leave them).

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
    "key_in_prompt",  # the call's body held one of our keys (dosportal.v1.keyscan); never the key
)
# Attributes every LogRecord has: `extra=` may not use them.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return KEY_RE.sub(REDACTED, text) if "_" in text else text


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What json.dumps(ensure_ascii=False) leaves raw and some readers take as a line break.
_JSON_RAW = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`)."""
    return (_CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS).sub(_escape, text)


def _indented(block: str) -> str:
    """A traceback or stack under its record: every line indented, escaped within itself."""
    return "\n".join("  " + escape_controls(line) for line in block.rstrip("\n").split("\n"))


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
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + _indented(record.exc_text)
        if record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the known
    fields that the record carries, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": escape_controls(record.levelname),
            "logger": escape_controls(record.name),
            "message": escape_controls(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = escape_controls(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = escape_controls(record.exc_text, keep_newlines=True)
        if record.stack_info:
            line["stack"] = escape_controls(record.stack_info, keep_newlines=True)
        text = json.dumps(line, default=str, ensure_ascii=False)
        return redact(_JSON_RAW.sub(lambda match: f"\\u{ord(match.group()):04x}", text))


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
