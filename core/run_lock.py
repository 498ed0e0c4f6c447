"""One writer per run: a lease file (``_LOCK``) in the run folder, renewed while the job runs.

Two jobs writing one run would each skip what the other has not finished yet, duplicate ids
and race for ``_SUCCESS``. So a job takes the lease before it reads the run, renews it every
quarter of ``ttl_s``, and deletes it at the end. A second job finds a fresh lease and stops
with one line naming the holder; a lease not renewed for ``ttl_s`` belongs to a job that died
(a kill, a lost node) and is taken over, at once when its process on this machine is gone. On a local disk the lease is created with O_EXCL; on
S3 (no conditional create in ``pyarrow.fs``) it is written, then read back after a pause, and
the job stops if another holder won the race.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from core import storage

LOCK_NAME = "_LOCK"


class RunLocked(RuntimeError):
    """Another live job holds the run."""


@dataclass
class Lease:
    holder: str  # host:pid
    token: str
    since: float
    renewed: float

    def describe(self) -> str:
        return (f"{self.holder} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}, "
                f"last renewed {time.time() - self.renewed:.0f} s ago")


def _read(loc: storage.Location) -> Lease | None:
    try:
        return Lease(**json.loads(storage.read_bytes(loc)))
    except storage.StorageError:
        return None
    except (ValueError, TypeError):  # torn or foreign: treat as stale
        return Lease("unknown", "", 0.0, 0.0)


def _dead_on_this_host(lease: Lease) -> bool:
    """A holder on this machine whose process is gone (killed) need not wait for the timeout."""
    host, _, pid = lease.holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _write(loc: storage.Location, lease: Lease) -> None:
    storage.write_bytes(loc, json.dumps(asdict(lease)).encode())


def acquire(run: storage.Location, ttl_s: float = 120.0) -> Lease:
    loc = run.join(LOCK_NAME)
    now = time.time()
    mine = Lease(f"{socket.gethostname()}:{os.getpid()}", uuid.uuid4().hex, now, now)
    held = _read(loc)
    if held is not None and now - held.renewed < ttl_s and not _dead_on_this_host(held):
        raise RunLocked(f"{run.uri} is being written by {held.describe()}; wait for that job, or, if it is "
                        f"dead, delete {loc.uri} (it is taken over after {ttl_s:.0f} s without renewal)")
    if isinstance(run.fs, pafs.LocalFileSystem) and held is None:
        try:
            fd = os.open(loc.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return acquire(run, ttl_s)  # someone else created it just now: look again
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(mine), fh)
        return mine
    _write(loc, mine)
    time.sleep(1.0 if not isinstance(run.fs, pafs.LocalFileSystem) else 0.0)
    now_held = _read(loc)
    if now_held is None or now_held.token != mine.token:
        holder = now_held.describe() if now_held else "another job"
        raise RunLocked(f"{run.uri} was taken over by {holder} at the same moment; rerun later")
    return mine


def renew(run: storage.Location, lease: Lease) -> bool:
    """Renew if still ours; False when another job has taken it over."""
    loc = run.join(LOCK_NAME)
    held = _read(loc)
    if held is not None and held.token not in ("", lease.token):
        return False
    lease.renewed = time.time()
    _write(loc, lease)
    return True


def release(run: storage.Location, lease: Lease) -> None:
    loc = run.join(LOCK_NAME)
    held = _read(loc)
    if held is not None and held.token == lease.token:
        storage.delete(loc)


class Heartbeat:
    """Renews the lease from a daemon thread; a failed renewal is retried at the next beat."""

    def __init__(self, run: storage.Location, lease: Lease, ttl_s: float):
        self.run, self.lease, self.every = run, lease, max(1.0, ttl_s / 4)
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-lease", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not renew(self.run, self.lease):
                    self.lost = True
                    return
            except storage.StorageError:
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self.lost:
            try:
                release(self.run, self.lease)
            except storage.StorageError:
                pass
