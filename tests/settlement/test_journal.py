"""The journal on disk: atomic private writes, quarantine, migration, identity, best effort.

Real files in ``tmp_path``; the official Python SDK (``runcycles``) reads and writes
the same directories to prove the format is shared.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import attrs
import pytest

from cycleguard._core._errors import UsageError
from cycleguard._core._journal_format import (
    encode_record,
    fingerprint,
    legacy_filename,
    quarantine_name,
    standard_filename,
)
from cycleguard._journal import Journal, JournalConfig, default_journal_dir
from cycleguard._settlement import Committed, Pending, SettlementPolicy
from tests._peer_sdk import peer_load, peer_write
from tests.settlement._fake import (
    ACTION,
    API_KEY,
    BASE_URL,
    RID,
    SUBJECT,
    FakeCycles,
    answer,
    commit_request,
    envelope,
    files_under,
    fresh_settlement,
    journal_of,
    make_record,
    read_record,
    record_path,
    seed,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions only")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Writing (D2, D3) ----------------------------------------------------------------------------


@posix_only
def test_records_are_written_atomically_and_privately(tmp_path: Path) -> None:
    """Content = the encoded record; file 0600, identity and base directories 0700, no temp
    file left; the directory is the identity fingerprint."""
    base = tmp_path / "journal"
    journal = journal_of(base)
    record = make_record()
    assert journal.write_sync(record)

    directory = base / fingerprint(BASE_URL, API_KEY)
    path = directory / standard_filename(RID)
    assert path.read_bytes() == encode_record(record)
    assert mode_of(path) == 0o600
    assert mode_of(directory) == 0o700
    assert mode_of(base) == 0o700
    assert files_under(base) == [path]


@posix_only
def test_loose_existing_directories_are_tightened(tmp_path: Path) -> None:
    """Pitfall 13: a base directory created elsewhere with 0755 is tightened to 0700."""
    base = tmp_path / "journal"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    assert journal_of(base).write_sync(make_record())
    assert mode_of(base) == 0o700


def test_rewrites_replace_the_whole_record(tmp_path: Path) -> None:
    """Every rewrite is a full atomic replace of the same file."""
    journal = journal_of(tmp_path)
    first = make_record()
    journal.write_sync(first)
    second = attrs.evolve(
        first, mode="event", not_before_ms=5, recorded_at_ms=first.recorded_at_ms + 1
    )
    journal.write_sync(second)
    assert read_record(record_path(tmp_path)) == second
    assert [p.name for p in files_under(tmp_path)] == [standard_filename(RID)]


def test_write_is_fsynced_before_it_replaces_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is flushed to disk before the rename publishes it."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert journal_of(tmp_path).write_sync(make_record())
    assert calls[:2] == ["fsync", "replace"]


def test_a_failed_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If publishing fails, the writer's temp file is removed and the write reports False."""

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    journal = journal_of(tmp_path)
    journal.directory_sync()
    monkeypatch.setattr(os, "replace", broken_replace)
    assert not journal.write_sync(make_record())
    assert files_under(tmp_path) == []


# Best effort (D14) ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unusable_directory_warns_once_and_settlement_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """D1/D14: the journal cannot be written (its base is a file): one WARNING for the
    directory, whatever the number of settlements; each settlement is still attempted."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("occupied")
    base = blocker / "journal"
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 3)
    with caplog.at_level(logging.DEBUG, logger="cycleguard"):
        first = await fresh_settlement(server, base, policy=SettlementPolicy(max_retries=2)).commit(
            reservation_id="rsv_1",
            request=commit_request(key="k1"),
            subject=SUBJECT,
            action=ACTION,
        )
        for n in range(2, 5):
            outcome = await fresh_settlement(server, base).commit(
                reservation_id=f"rsv_{n}",
                request=commit_request(key=f"k{n}"),
                subject=SUBJECT,
                action=ACTION,
            )
            assert isinstance(outcome, Committed)
    assert isinstance(first, Pending)
    assert not first.journaled
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "unusable" in r.message
    ]
    assert len(warnings) == 1
    assert str(base) in warnings[0].getMessage()
    assert "continuing without durability" in warnings[0].getMessage()
    assert len(server.of("commit")) >= 4


# Quarantine (D4, CR-DURABLE-005) ---------------------------------------------------------------


def test_corrupt_and_unsupported_records_are_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CR-DURABLE-005: ``{not json``, ``"version": 2`` and ``[]`` are each moved to
    ``.corrupt`` with one WARNING naming the file; the valid record still loads."""
    valid = seed(tmp_path)
    directory = record_path(tmp_path).parent
    other = json.loads(encode_record(make_record(reservation_id="rsv_other")))
    bad = {
        "broken.json": b"{not json",
        "v2-unsupported.json": json.dumps({**other, "version": 2}).encode(),
        "array.json": b"[]",
    }
    for name, raw in bad.items():
        (directory / name).write_bytes(raw)

    with caplog.at_level(logging.WARNING, logger="cycleguard"):
        loaded = journal_of(tmp_path).load_sync()

    assert loaded.records == (valid,)  # other_valid_records_still_replay
    expected = sorted(directory / quarantine_name(name) for name in bad)
    assert sorted(loaded.quarantined) == expected  # corrupt_record_is_quarantined, unsupported_…
    for name, raw in bad.items():
        assert not (directory / name).exists()
        assert (directory / quarantine_name(name)).read_bytes() == raw
    reports = [r.getMessage() for r in caplog.records if "Quarantined" in r.getMessage()]
    assert len(reports) == 3  # corruption_is_reported
    for name in bad:
        assert sum(str(directory / name) in report for report in reports) == 1


def test_an_existing_quarantine_file_is_replaced(tmp_path: Path) -> None:
    """Quarantining ``X.json`` over an older ``X.corrupt`` keeps the newest bytes."""
    seed(tmp_path)
    directory = record_path(tmp_path).parent
    (directory / "x.corrupt").write_bytes(b"old")
    (directory / "x.json").write_bytes(b"new garbage")
    journal_of(tmp_path).load_sync()
    assert (directory / "x.corrupt").read_bytes() == b"new garbage"


def test_stale_temp_files_are_reaped_and_fresh_ones_kept(tmp_path: Path) -> None:
    """Pitfall 12: temp files of crashed writers (older than an hour) go; live ones stay."""
    seed(tmp_path)
    directory = record_path(tmp_path).parent
    stale = directory / "v2-a.json.1.deadbeef.tmp"
    fresh = directory / "v2-b.json.2.cafebabe.tmp"
    stale.write_bytes(b"{")
    fresh.write_bytes(b"{")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    loaded = journal_of(tmp_path).load_sync()
    assert not stale.exists()
    assert fresh.exists()
    assert [r.reservation_id for r in loaded.records] == [RID]


def test_records_of_another_server_are_left_alone(tmp_path: Path) -> None:
    """Pitfall 15: only records whose base_url equals the client's exactly are returned."""
    seed(tmp_path, attrs.evolve(make_record(reservation_id="rsv_here")))
    foreign = attrs.evolve(make_record(reservation_id="rsv_there"), base_url=BASE_URL + "/")
    seed(tmp_path, foreign)
    loaded = journal_of(tmp_path).load_sync()
    assert [r.reservation_id for r in loaded.records] == ["rsv_here"]
    assert record_path(tmp_path, "rsv_there").exists()


def test_identities_are_partitioned(tmp_path: Path) -> None:
    """D10: another key (no tenant) is another directory; its records are invisible here."""
    seed(tmp_path, api_key="key-a")
    assert journal_of(tmp_path, api_key="key-b").load_sync().records == ()
    assert len(journal_of(tmp_path, api_key="key-a").load_sync().records) == 1


# Legacy names (D13, CR-DURABLE-007) -------------------------------------------------------------


def test_distinct_identifiers_get_distinct_files(tmp_path: Path) -> None:
    """CR-DURABLE-007: ``rsv/a`` and ``rsv_a`` are two ``v2-`` files, named by sha256."""
    journal = journal_of(tmp_path)
    journal.write_sync(make_record(reservation_id="rsv/a"))
    journal.write_sync(make_record(reservation_id="rsv_a"))
    names = sorted(p.name for p in files_under(tmp_path))
    assert names == sorted([standard_filename("rsv/a"), standard_filename("rsv_a")])
    assert {r.reservation_id for r in journal.load_sync().records} == {"rsv/a", "rsv_a"}


def test_matching_legacy_record_migrates_without_deleting_collision(tmp_path: Path) -> None:
    """CR-DURABLE-007: a legacy ``rsv_a.json`` holding ``rsv/a`` survives ``discard("rsv_a")``
    (the ids differ) and is migrated to the standard name of ``rsv/a`` on load."""
    journal = journal_of(tmp_path)
    directory = journal.directory_sync()
    directory.mkdir(parents=True)
    legacy = directory / legacy_filename("rsv/a")
    assert legacy.name == "rsv_a.json"
    legacy.write_bytes(encode_record(make_record(reservation_id="rsv/a")))

    journal.discard_sync("rsv_a")
    assert legacy.exists()  # a colliding id never deletes another reservation's record

    loaded = journal.load_sync()
    assert [r.reservation_id for r in loaded.records] == ["rsv/a"]
    assert not legacy.exists()
    assert (directory / standard_filename("rsv/a")).exists()

    journal.discard_sync("rsv/a")
    assert files_under(tmp_path) == []


def test_a_legacy_duplicate_of_a_standard_record_is_removed(tmp_path: Path) -> None:
    """If the standard file already holds the same id, the legacy copy is deleted."""
    journal = journal_of(tmp_path)
    record = make_record(reservation_id="rsv/a")
    journal.write_sync(record)
    legacy = journal.directory_sync() / "rsv_a.json"
    legacy.write_bytes(encode_record(record))
    loaded = journal.load_sync()
    assert [r.reservation_id for r in loaded.records] == ["rsv/a"]
    assert not legacy.exists()


def test_discard_removes_a_legacy_twin_only_when_ids_match(tmp_path: Path) -> None:
    """Discarding ``rsv_a`` removes ``rsv_a.json`` only if it stores ``rsv_a``."""
    journal = journal_of(tmp_path)
    directory = journal.directory_sync()
    directory.mkdir(parents=True)
    (directory / "rsv_a.json").write_bytes(encode_record(make_record(reservation_id="rsv_a")))
    journal.discard_sync("rsv_a")
    assert files_under(tmp_path) == []


# Interoperability with the official Python SDK ----------------------------------------------------


@pytest.mark.anyio
async def test_records_left_by_the_official_sdk_are_settled(tmp_path: Path) -> None:
    """A record the Python SDK journaled (same identity directory) is replayed and removed."""
    directory = tmp_path / fingerprint(BASE_URL, API_KEY)
    peer_write(directory, make_record())
    server = FakeCycles()
    report = await fresh_settlement(server, tmp_path).replay()
    assert isinstance(report.outcome(RID), Committed)
    assert [seen.key for seen in server.seen] == [commit_request().idempotency_key]
    assert files_under(tmp_path) == []


def test_the_official_sdk_replays_our_records(tmp_path: Path) -> None:
    """The Python SDK finds, parses and would replay what cycleguard wrote."""
    journal = journal_of(tmp_path)
    journal.write_sync(make_record(reservation_id="rsv/a"))
    journal.write_sync(make_record(reservation_id="r🚀"))
    assert sorted(peer_load(journal.directory_sync(), BASE_URL)) == sorted(["rsv/a", "r🚀"])


# Configuration and secrets ------------------------------------------------------------------------


def test_config_from_env(tmp_path: Path) -> None:
    """``CYCLES_JOURNAL_ENABLED`` and ``CYCLES_JOURNAL_DIR``, as the peers name them."""
    env = {"CYCLES_JOURNAL_ENABLED": "False", "CYCLES_JOURNAL_DIR": str(tmp_path)}
    config = JournalConfig.from_env(environ=env)
    assert config == JournalConfig(enabled=False, directory=tmp_path)
    assert JournalConfig.from_env(environ={}) == JournalConfig()
    assert JournalConfig.from_env(environ={"CYCLES_JOURNAL_ENABLED": "1"}).enabled
    with pytest.raises(UsageError, match="CYCLES_JOURNAL_ENABLED"):
        JournalConfig.from_env(environ={"CYCLES_JOURNAL_ENABLED": "maybe"})


def test_default_directory_is_the_user_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without configuration records go to the per-user state directory."""
    if os.name != "posix" or os.uname().sysname == "Darwin":
        pytest.skip("the XDG layout applies to Linux and other Unixes")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_journal_dir() == tmp_path / "state" / "cycleguard" / "commit-journal"
    assert JournalConfig().base_directory() == default_journal_dir()
    monkeypatch.delenv("XDG_STATE_HOME")
    assert (
        default_journal_dir() == Path.home() / ".local" / "state" / "cycleguard" / "commit-journal"
    )


@pytest.mark.anyio
async def test_the_api_key_is_never_written_logged_or_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No path, record, log line or repr contains the API key."""
    secret = "cyc_live_do-not-leak-me"
    server = FakeCycles()
    server.script(answer(envelope(401, "UNAUTHORIZED")))
    with caplog.at_level(logging.DEBUG, logger="cycleguard"):
        settlement = fresh_settlement(server, tmp_path, api_key=secret)
        await settlement.commit(
            reservation_id=RID, request=commit_request(), subject=SUBJECT, action=ACTION
        )
        await settlement.drain(timeout=1)
    assert secret not in caplog.text
    assert secret not in repr(settlement)
    assert secret not in repr(settlement.journal)
    for path in files_under(tmp_path):
        assert secret not in str(path)
        assert secret.encode() not in path.read_bytes()


def test_journal_repr_names_only_the_place() -> None:
    """The repr shows the base directory and server."""
    journal = Journal(Path("/j"), base_url=BASE_URL, api_key="sekrit")
    assert repr(journal) == f"Journal(base='/j', base_url='{BASE_URL}')"
