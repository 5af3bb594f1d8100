"""The durable settlement journal on disk (recovery profile 0.3, durable level).

One file per unresolved settlement in ``<directory>/<fingerprint>/``, in the
format the official Cycles SDKs share (:mod:`cycleguard._core._journal_format`),
so a record any of them left behind is settled by cycleguard and the other way
round when they share a directory (set ``CYCLES_JOURNAL_DIR`` for both).

Writes are atomic and private: a writer-unique temp file created ``0600``,
``fsync``, ``os.replace`` over the target, then an ``fsync`` of the directory;
directories are made and tightened to ``0700`` on the first write. Blocking
file I/O never runs on the event loop: one private thread per process
(:class:`~cycleguard._worker.SerialWorker`) performs every journal's writes,
removals and scans in the order they were asked for. Writes that queue up
while the thread is busy share one ``fsync`` of their directory (group commit);
none is reported durable before that ``fsync`` has returned.

Journal I/O never raises. When the directory cannot be used (read-only, full,
not a directory), one WARNING on the ``cycleguard`` logger says so for that
directory and the process goes on in best-effort mode: settlement is still
attempted, the outcome reports ``journaled=False``, further failures are logged
at DEBUG only.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import stat
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast, final

import attrs

from cycleguard._core._errors import UsageError
from cycleguard._core._journal_format import (
    STALE_TMP_SECONDS,
    JournalRecord,
    Keep,
    Migrate,
    Quarantine,
    decode_record,
    encode_record,
    fingerprint,
    judge_file,
    legacy_filename,
    quarantine_name,
    standard_filename,
    temp_filename,
)
from cycleguard._worker import SerialWorker

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("Journal", "JournalConfig", "JournalLoad", "default_journal_dir")

logger = logging.getLogger("cycleguard")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# The journal's writer thread. ``_unsynced`` holds the directories it published
# records in since its last batch ended; it is touched only on that thread.
_unsynced: set[str] = set()


def _sync_directories() -> None:
    for directory in sorted(_unsynced):
        _fsync_directory(directory)
    _unsynced.clear()


_writer = SerialWorker("cycleguard-journal", after_batch=_sync_directories)

# One warning per unusable directory per process, whatever the number of
# Journal objects or calls.
_warned_lock = threading.Lock()
_warned_dirs: set[str] = set()


def _state_home() -> Path:
    try:
        platformdirs = importlib.import_module("platformdirs")
    except ImportError:
        pass
    else:
        user_state_dir = cast("Callable[[str], str]", platformdirs.user_state_dir)
        return Path(user_state_dir("cycleguard"))
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        local = os.environ.get("LOCALAPPDATA")
        root = Path(local) if local else Path.home() / "AppData" / "Local"
        return root / "cycleguard"
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        return Path.home() / "Library" / "Application Support" / "cycleguard"
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return root / "cycleguard"


def default_journal_dir() -> Path:
    """The default base directory: ``commit-journal`` in the per-user state directory.

    That is ``platformdirs.user_state_dir("cycleguard")`` when ``platformdirs`` is
    installed, otherwise ``$XDG_STATE_HOME/cycleguard`` (default
    ``~/.local/state/cycleguard``) on Linux, ``~/Library/Application Support/cycleguard``
    on macOS and ``%LOCALAPPDATA%\\cycleguard`` on Windows.

    The official SDKs default to ``~/.runcycles/commit-journal``; point
    ``CYCLES_JOURNAL_DIR`` at one directory to let them share records.
    """
    return _state_home() / "commit-journal"


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name} must be true or false, got {raw!r}")


@final
@attrs.frozen(kw_only=True)
class JournalConfig:
    """Whether and where settlements are journaled.

    ``directory`` is the base directory (records go in a per-identity
    subdirectory of it); ``None`` means :func:`default_journal_dir`.

    >>> JournalConfig(enabled=False).enabled
    False
    >>> config = JournalConfig.from_env(environ={"CYCLES_JOURNAL_DIR": "/srv/journal"})
    >>> config.directory == Path("/srv/journal"), config.enabled
    (True, True)
    """

    enabled: bool = True
    directory: Path | None = None

    @classmethod
    def from_env(
        cls, prefix: str = "CYCLES_", environ: Mapping[str, str] | None = None
    ) -> JournalConfig:
        """Read ``{prefix}JOURNAL_ENABLED`` (true/false) and ``{prefix}JOURNAL_DIR``.

        Raises :class:`~cycleguard.errors.UsageError` for a malformed flag.
        """
        env = os.environ if environ is None else environ
        enabled_raw = env.get(prefix + "JOURNAL_ENABLED", "").strip()
        enabled = _flag(prefix + "JOURNAL_ENABLED", enabled_raw) if enabled_raw else True
        directory_raw = env.get(prefix + "JOURNAL_DIR", "").strip()
        directory = Path(directory_raw).expanduser() if directory_raw else None
        return cls(enabled=enabled, directory=directory)

    def base_directory(self) -> Path:
        """The configured base directory, or the default."""
        return self.directory if self.directory is not None else default_journal_dir()


@final
@attrs.frozen(kw_only=True)
class JournalLoad:
    """What a scan of the identity directory found.

    ``records`` are the valid records for this client's ``base_url``, in file
    name order; ``quarantined`` the paths malformed files were moved to;
    ``complete`` is false when the directory could not be scanned to the end.
    """

    records: tuple[JournalRecord, ...] = ()
    quarantined: tuple[Path, ...] = ()
    complete: bool = True


def _tighten(path: Path | str, mode: int) -> None:
    if os.name != "posix":  # pragma: no cover - POSIX modes only
        return
    with contextlib.suppress(OSError):
        os.chmod(path, mode)


def _fsync_directory(directory: Path | str) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_TEMP_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _replace(directory: str, reservation_id: str, data: bytes) -> None:
    """Write ``data`` to a private temp file, fsync it, and rename it over the record.

    Plain string paths and ``os`` calls: this runs before every commit.
    """
    name = standard_filename(reservation_id)
    tmp = os.path.join(directory, temp_filename(name, os.getpid(), secrets.token_hex(4)))
    fd = os.open(tmp, _TEMP_FLAGS, 0o600)
    try:
        try:
            _write_all(fd, data)
            if os.name == "posix":  # the creation mode is subject to the umask
                with contextlib.suppress(OSError):
                    os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:  # remove the temp file whatever happened, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@final
class Journal:
    """The journal of one identity (server + principal) in a base directory.

    The API key is used once, off the event loop, to derive the identity
    directory name; it is never written, logged or shown in a repr.

    Args:
        base: The base directory (see :class:`JournalConfig`).
        base_url: The server URL exactly as configured; only records for it are loaded.
        api_key: The API key (the principal when no tenant is set).
        tenant: The tenant; when set and not blank it is the principal, so the
            directory survives key rotation.

    Example::

        journal = Journal(tmp_path, base_url="http://127.0.0.1:7878", api_key=key)
        await journal.write(record)
        loaded = await journal.load()
    """

    def __init__(
        self, base: Path, *, base_url: str, api_key: str, tenant: str | None = None
    ) -> None:
        self._base = base
        self._base_url = base_url
        self._credentials: tuple[str, str | None] | None = (api_key, tenant)
        self._directory: Path | None = None
        self._lock = threading.Lock()
        self._prepared = False  # the identity directory exists and is tightened

    def __repr__(self) -> str:
        return f"Journal(base={str(self._base)!r}, base_url={self._base_url!r})"

    @property
    def base(self) -> Path:
        """The base directory."""
        return self._base

    @property
    def base_url(self) -> str:
        """The server whose records this journal holds."""
        return self._base_url

    # Identity -----------------------------------------------------------------

    def directory_sync(self) -> Path:
        """The identity directory (blocking: derives the fingerprint on first use)."""
        with self._lock:
            if self._directory is None:
                assert self._credentials is not None
                api_key, tenant = self._credentials
                self._directory = self._base / fingerprint(self._base_url, api_key, tenant)
                self._credentials = None
            return self._directory

    async def directory(self) -> Path:
        """The identity directory ``<base>/<fingerprint>``."""
        if self._directory is not None:
            return self._directory
        return await _writer.run(self.directory_sync)

    def path_of(self, reservation_id: str) -> Path:
        """The standard path of a reservation's record (blocking on first use)."""
        return self.directory_sync() / standard_filename(reservation_id)

    # Failure reporting ----------------------------------------------------------

    def _unusable(self, action: str, target: str, error: BaseException) -> None:
        key = str(self._base)
        with _warned_lock:
            first = key not in _warned_dirs
            _warned_dirs.add(key)
        if first:
            logger.warning(
                "Settlement journal at %s is unusable (%s %s failed: %s); continuing "
                "without durability: unsettled spend will not survive a restart of this "
                "process. Fix the directory or set CYCLES_JOURNAL_DIR / "
                "CYCLES_JOURNAL_ENABLED=false.",
                self._base,
                action,
                target,
                error,
            )
        else:
            logger.debug("Settlement journal %s %s failed: %s", action, target, error)

    # Writing --------------------------------------------------------------------

    def _prepared_directory(self) -> str:
        """The identity directory, made and tightened on first use (blocking)."""
        directory = self.directory_sync()
        if not self._prepared:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _tighten(directory.parent, 0o700)
            _tighten(directory, 0o700)
            self._prepared = True
        return str(directory)

    def _publish(self, record: JournalRecord) -> bool:
        """Atomically replace the record's file; its directory is not fsync'd yet."""
        try:
            data = encode_record(record)
            try:
                _replace(self._prepared_directory(), record.reservation_id, data)
            except FileNotFoundError:  # the directory was removed after it was made
                self._prepared = False
                _replace(self._prepared_directory(), record.reservation_id, data)
        except (OSError, ValueError) as error:
            self._unusable("write of", record.reservation_id, error)
            return False
        logger.debug("Journaled settlement %s (%s mode)", record.reservation_id, record.mode)
        return True

    def _publish_in_batch(self, record: JournalRecord) -> bool:
        published = self._publish(record)
        if published:
            _unsynced.add(str(self.directory_sync()))  # fsync'd when the batch ends
        return published

    def write_sync(self, record: JournalRecord) -> bool:
        """Atomically write ``record`` (blocking). True when it is durably on disk."""
        published = self._publish(record)
        if published:
            _fsync_directory(self.directory_sync())
        return published

    async def write(self, record: JournalRecord) -> bool:
        """Atomically write ``record``; True when it is durably on disk. Never raises.

        Writes waiting at the same time share one directory ``fsync``.
        """
        return await _writer.run(partial(self._publish_in_batch, record))

    # Discarding -----------------------------------------------------------------

    def discard_sync(self, reservation_id: str) -> None:
        """Remove a settled reservation's record (blocking). Never raises.

        A legacy-named file is removed only when the id stored in it is exactly
        ``reservation_id``: distinct ids could share a legacy name.
        """
        try:
            directory = str(self.directory_sync())
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, standard_filename(reservation_id)))
            legacy = os.path.join(directory, legacy_filename(reservation_id))
            try:
                if not stat.S_ISREG(os.stat(legacy).st_mode):
                    return
            except (FileNotFoundError, NotADirectoryError):
                return
            stored = decode_record(Path(legacy).read_bytes()).value_or(None)
            if stored is not None and stored.reservation_id == reservation_id:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(legacy)
        except OSError as error:
            self._unusable("removal of", reservation_id, error)

    async def discard(self, reservation_id: str) -> None:
        """Remove a settled reservation's record. Never raises."""
        await _writer.run(partial(self.discard_sync, reservation_id))

    def discard_soon(self, reservation_id: str) -> None:
        """Have the journal's thread remove a settled reservation's record; do not wait.

        The removal runs with the thread's next batch (before any write, scan
        or drain this process asks for afterwards) or within about a second.
        Until then another process sees the record, and after a crash it is
        replayed: a commit replayed with its idempotency key is answered
        idempotently (or as already finalized), so it is never charged twice.
        """
        _writer.post(partial(self.discard_sync, reservation_id))

    # Loading --------------------------------------------------------------------

    def _quarantine(self, path: Path, reason: str) -> Path | None:
        destination = path.with_name(quarantine_name(path.name))
        try:
            os.replace(path, destination)
        except OSError as error:
            logger.warning(
                "Corrupt settlement journal record %s (%s) could not be quarantined: %s",
                path,
                reason,
                error,
            )
            return None
        logger.warning(
            "Quarantined corrupt settlement journal record %s (%s); moved to %s",
            path,
            reason,
            destination,
        )
        return destination

    @staticmethod
    def _reap_stale_temp_files(directory: Path) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for tmp in directory.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink(missing_ok=True)

    def _migrate(self, path: Path, record: JournalRecord, target: Path) -> bool:
        """Move a legacy-named record to its standard name; False if it is a duplicate."""
        try:
            if not target.exists():
                os.replace(path, target)
                logger.info("Migrated settlement journal record %s to %s", path, target)
                return True
            existing = decode_record(target.read_bytes()).value_or(None)
            if existing is not None and existing.reservation_id == record.reservation_id:
                path.unlink(missing_ok=True)
                logger.info("Removed duplicate legacy settlement journal record %s", path)
                return False
        except OSError as error:
            logger.warning("Could not migrate settlement journal record %s: %s", path, error)
            return True
        logger.warning(
            "Legacy settlement journal record %s collides with %s, which holds another "
            "reservation; left in place",
            path,
            target,
        )
        return True

    def _accept(self, record: JournalRecord, records: list[JournalRecord]) -> None:
        if record.base_url == self._base_url:
            records.append(record)

    def load_sync(self) -> JournalLoad:
        """Scan the identity directory (blocking). Never raises.

        Removes temp files older than an hour, quarantines malformed records
        (``X.json`` -> ``X.corrupt``, one WARNING naming each), migrates
        legacy-named records to their standard name, and returns the valid
        records for this journal's ``base_url``.
        """
        records: list[JournalRecord] = []
        quarantined: list[Path] = []
        complete = True
        try:
            directory = self.directory_sync()
            if not directory.is_dir():
                return JournalLoad()
            self._reap_stale_temp_files(directory)
            for path in sorted(directory.glob("*.json")):
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue  # settled by a concurrent worker
                except OSError as error:
                    moved = self._quarantine(path, f"unreadable: {error}")
                    if moved is not None:
                        quarantined.append(moved)
                    continue
                match judge_file(path.name, raw):
                    case Quarantine(reason=reason):
                        moved = self._quarantine(path, reason)
                        if moved is not None:
                            quarantined.append(moved)
                    case Migrate(record=record, target=target):
                        if self._migrate(path, record, directory / target):
                            self._accept(record, records)
                    case Keep(record=record):
                        self._accept(record, records)
        except OSError as error:
            complete = False
            logger.warning("Could not scan settlement journal %s: %s", self._base, error)
        return JournalLoad(
            records=tuple(records), quarantined=tuple(quarantined), complete=complete
        )

    async def load(self) -> JournalLoad:
        """Scan the identity directory (see :meth:`load_sync`). Never raises."""
        return await _writer.run(self.load_sync)
