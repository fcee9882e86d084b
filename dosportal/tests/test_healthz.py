from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

pytestmark = pytest.mark.django_db


def test_it_answers_200_json_without_auth(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "database": "ok"}


def test_it_is_never_cached(client: Client) -> None:
    response = client.get("/healthz")

    assert "no-cache" in response["Cache-Control"]
    assert "no-store" in response["Cache-Control"]


def test_it_answers_503_when_the_database_does_not(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_cursor(*args: object, **kwargs: object) -> None:
        raise ConnectionError("database is down")

    monkeypatch.setattr(connection, "cursor", broken_cursor)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unavailable"}


def test_it_refuses_post(client: Client) -> None:
    response = client.post("/healthz")

    assert response.status_code == 405


@pytest.fixture
def fresh_spool_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from dosportal import health

    monkeypatch.setitem(health._spool_memo, "at", -1e9)
    monkeypatch.setitem(health._spool_memo, "value", True)


def test_a_spool_that_cannot_be_written_is_reported_but_keeps_the_200(
    client: Client, settings, tmp_path, fresh_spool_check, caplog
) -> None:
    from dosportal import metrics

    (tmp_path / "a-file").write_text("")
    # As root every directory is writable: a spool whose parent is a file cannot be made (ENOTDIR).
    settings.DOS_AI_SPOOL_DIR = str(tmp_path / "a-file" / "spool")
    failures = metrics.spool_write_failures_total.labels("check")._value.get()

    response = client.get("/healthz")
    again = client.get("/healthz")  # within SPOOL_CHECK_SECONDS: the verdict is remembered

    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "database": "ok", "spool": "not writable"}
    assert again.json() == response.json()
    assert metrics.spool_write_failures_total.labels("check")._value.get() == failures + 1
    assert [record.levelname for record in caplog.records if "spool" in record.getMessage()] == ["ERROR"]


def test_a_writable_spool_is_not_mentioned_and_is_left_as_it_was(
    client: Client, settings, tmp_path, fresh_spool_check
) -> None:
    settings.DOS_AI_SPOOL_DIR = str(tmp_path / "spool")

    response = client.get("/healthz")

    assert response.json() == {"status": "ok", "database": "ok"}
    assert list((tmp_path / "spool").iterdir()) == []
