"""The settler's spool on its own, with a store that is told when to be down or to refuse:
a disk that cannot be written loses nothing, a refused settlement does not hold up the
others, and adoption never takes a live worker's file nor deletes one before its settlements
are safe. (End to end, with a real PostgreSQL and worker: test_faults.py.)"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
from pathlib import Path

import pytest

from billing.settlement import Settlement
from dosportal import metrics
from dosportal.v1 import settler as settler_module
from dosportal.v1.settler import Settler, Spool, read_waiting
from dosportal.v1.store import StoreUnavailable


class ConstraintError(Exception):
    """What a settlement the database refuses raises (psycopg's IntegrityError, say)."""


class FakeStore:
    """The `settle` of the Store protocol: written once per hold, like the real statement."""

    def __init__(self) -> None:
        self.down = False
        self.refusing: set[int] = set()
        self.written: list[int] = []

    async def settle(self, settlement: Settlement) -> None:
        if self.down:
            raise StoreUnavailable("down")
        if settlement.hold_id in self.refusing:
            raise ConstraintError(f"hold {settlement.hold_id} violates a constraint")
        if settlement.hold_id not in self.written:  # a hold that is gone makes a second write a no-op
            self.written.append(settlement.hold_id)


def settlement(hold_id: int) -> Settlement:
    return Settlement(
        hold_id=hold_id, user_id=7, api_key_id=3, request_id=f"req_{hold_id}", client_request_id="",
        endpoint="chat/completions", model="dos-ai", input_price_micros_per_million=500_000,
        output_price_micros_per_million=1_500_000, prompt_tokens=11, completion_tokens=6, charge=True,
        status_code=200, streamed=True, latency_ms=5, started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )  # fmt: skip


def spool_entries(directory: Path) -> list[dict]:
    return [
        json.loads(line) for path in sorted(directory.glob("settle-*.jsonl")) for line in path.read_text().splitlines()
    ]


def counted(metric, *labels: str) -> float:
    return (metric.labels(*labels) if labels else metric)._value.get()


@pytest.fixture(autouse=True)
def _no_background_retries(monkeypatch):
    """Each test runs the retry passes itself (`flush`, `adopt`), at the moments it chooses."""
    monkeypatch.setattr(settler_module, "FIRST_RETRY_SECONDS", 3600.0)


async def test_a_spool_that_cannot_be_written_keeps_the_settlement_in_memory_until_the_database_takes_it(
    tmp_path, caplog
) -> None:
    # Root may write anywhere, so the spool is made unwritable another way: its parent is a file
    # (mkdir fails with ENOTDIR whoever runs it).
    (tmp_path / "not-a-directory").write_text("")
    store = FakeStore()
    settler = Settler(store, Spool(tmp_path / "not-a-directory" / "spool"))
    store.down = True
    failures = counted(metrics.spool_write_failures_total, "keep")

    with caplog.at_level(logging.ERROR, logger="dosportal.v1.settler"):
        assert await settler.settle(settlement(1)) is False
        assert await settler.settle(settlement(2)) is False

    assert sorted(settler.waiting) == [1, 2]
    assert counted(metrics.spool_write_failures_total, "keep") == failures + 2
    assert [record.levelname for record in caplog.records if "spool" in record.getMessage()] == ["ERROR", "ERROR"]
    store.down = False
    assert await settler.flush() is True
    assert store.written == [1, 2]
    assert settler.waiting == {}
    await settler.close()


async def test_a_spool_that_becomes_writable_again_receives_what_waited_in_memory(tmp_path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("")  # a file where the directory should be
    store = FakeStore()
    settler = Settler(store, Spool(blocker))
    store.down = True
    await settler.settle(settlement(1))
    blocker.unlink()

    await settler.flush()  # still down: the pass ends at the outage
    settler._spool_waiting()  # what each retry pass does first

    assert read_waiting([json.dumps(entry) for entry in spool_entries(blocker)]) == [settlement(1)]
    await settler.close()


async def test_a_settlement_the_database_refuses_does_not_hold_up_the_ones_behind_it(tmp_path, caplog) -> None:
    store = FakeStore()
    settler = Settler(store, Spool(tmp_path))
    store.down = True
    for hold_id in (1, 2, 3):
        await settler.settle(settlement(hold_id))
    store.down, store.refusing = False, {1}
    refused = counted(metrics.settlements_refused_total)

    with caplog.at_level(logging.ERROR, logger="dosportal.v1.settler"):
        assert await settler.flush() is False
        assert await settler.flush() is False  # refused again: reported once

    assert store.written == [2, 3]
    assert list(settler.waiting) == [1]
    assert counted(metrics.settlements_refused_total) == refused + 1
    [error] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert "req_1 (hold 1) refused by the database" in error.getMessage()
    assert {"refused": 1, "user_id": 7} in [
        {name: entry[name] for name in ("refused", "user_id")}
        for entry in spool_entries(tmp_path)
        if "refused" in entry
    ]
    store.refusing = set()
    assert await settler.flush() is True
    assert store.written == [2, 3, 1]
    await settler.close()


async def test_a_refused_settlement_on_the_hot_path_is_kept_and_reported(tmp_path) -> None:
    store = FakeStore()
    store.refusing = {5}
    settler = Settler(store, Spool(tmp_path))

    assert await settler.settle(settlement(5)) is False
    assert await settler.settle(settlement(6)) is True

    assert (list(settler.waiting), store.written) == ([5], [6])
    assert [entry.get("refused") for entry in spool_entries(tmp_path)] == [None, 5]
    await settler.close()


async def test_a_new_spool_file_is_locked_before_an_adopter_can_see_it(tmp_path, monkeypatch) -> None:
    """Another worker's adoption pass that runs while this worker creates its file (between
    the file's creation and its lock) must not take the file for a dead worker's."""
    store = FakeStore()
    owner = Settler(store, Spool(tmp_path))
    adopter = Settler(FakeStore(), Spool(tmp_path))
    real_flock = fcntl.flock
    raced = []

    def flock_after_an_adoption_pass(fd, operation):
        if operation == fcntl.LOCK_EX and not raced:  # the owner locking its new file
            raced.append(True)
            adopter.adopt()
        return real_flock(fd, operation)

    monkeypatch.setattr(settler_module.fcntl, "flock", flock_after_an_adoption_pass)
    store.down = True

    await owner.settle(settlement(1))

    assert raced == [True]
    assert adopter.waiting == {}
    assert [entry["keep"]["hold_id"] for entry in spool_entries(tmp_path)] == [1]
    assert list(tmp_path.glob(".*")) == []  # no file left under its temporary name
    await owner.close()


def abandoned_spool(directory: Path, *hold_ids: int) -> Path:
    """The spool file of a worker that died with `hold_ids` waiting (its lock went with it)."""
    dead = Spool(directory)
    for hold_id in hold_ids:
        dead.keep(settlement(hold_id))
    assert dead.fd is not None and dead.path is not None
    settler_module.os.close(dead.fd)
    return dead.path


async def test_an_adopted_file_stays_until_its_settlements_are_in_the_adopters_spool(tmp_path, monkeypatch) -> None:
    orphan = abandoned_spool(tmp_path, 1, 2)
    store = FakeStore()
    store.down = True
    adopter = Settler(store, Spool(tmp_path))
    real_keep = Spool.keep

    def full_disk(self, settlement):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "keep", full_disk)
    adopter.adopt()

    assert sorted(adopter.waiting) == [1, 2]
    assert orphan.exists()  # its settlements are in memory only: the file stays
    monkeypatch.setattr(Spool, "keep", real_keep)
    adopter.adopt()  # the next retry pass

    assert not orphan.exists()
    assert sorted(entry["keep"]["hold_id"] for entry in spool_entries(tmp_path)) == [1, 2]
    store.down = False
    assert await adopter.flush() is True
    assert store.written == [1, 2]
    await adopter.close()


async def test_an_orphan_whose_settlements_were_written_is_removed_even_if_the_disk_is_full(
    tmp_path, monkeypatch
) -> None:
    orphan = abandoned_spool(tmp_path, 1)
    store = FakeStore()
    adopter = Settler(store, Spool(tmp_path))
    monkeypatch.setattr(Spool, "keep", lambda self, settlement: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    monkeypatch.setattr(Spool, "done", lambda self, hold_id: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    adopter.adopt()
    assert orphan.exists()

    assert await adopter.flush() is True  # written: the database has it now
    adopter.adopt()

    assert not orphan.exists()
    assert store.written == [1]
    await adopter.close()


async def test_a_live_workers_file_is_not_adopted(tmp_path) -> None:
    store = FakeStore()
    store.down = True
    live = Settler(store, Spool(tmp_path))
    await live.settle(settlement(1))
    other = Settler(FakeStore(), Spool(tmp_path))

    other.adopt()

    assert other.waiting == {}
    assert [entry["keep"]["hold_id"] for entry in spool_entries(tmp_path)] == [1]
    await live.close()


async def test_a_spool_file_that_cannot_be_adopted_does_not_stop_the_adoption_of_the_others(tmp_path, caplog) -> None:
    unreadable = tmp_path / f"settle-{Spool(tmp_path).tag}-0-0.jsonl"
    unreadable.mkdir()  # open() fails on it (IsADirectoryError), whoever runs the test
    orphan = abandoned_spool(tmp_path, 4)
    store = FakeStore()
    adopter = Settler(store, Spool(tmp_path))

    with caplog.at_level(logging.ERROR, logger="dosportal.v1.settler"):
        adopter.adopt()

    assert list(adopter.waiting) == [4]
    assert not orphan.exists()
    assert any("cannot adopt the settlement spool file" in record.getMessage() for record in caplog.records)
    await adopter.close()
