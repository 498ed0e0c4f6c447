"""One writer per run: a lease file (``_LOCK``) in the run folder, renewed while the job runs.

Two jobs writing one run would each skip what the other has not finished yet, duplicate ids
and race for ``_SUCCESS``. So a job takes the lease before it reads the run, renews it every
quarter of ``ttl_s``, and deletes it at the end. A second job finds a fresh lease and stops
with one line naming the holder; a lease not renewed for ``ttl_s`` belongs to a job that died
(a kill, a lost node) and is taken over, at once when its process on this machine is gone.

Taking and renewing are atomic: on a local disk under an exclusive ``flock`` of ``_LOCK.guard``
(read, decide, write as one step; the lease itself is written whole and renamed); on S3 with
conditional writes (``If-None-Match: *`` to create, ``If-Match: ETAG`` to take over or renew
exactly the version read), so of two jobs starting at once exactly one wins, and a job whose
lease was taken over learns it at its next renewal. On a store without conditional writes
the lease is written, then read back after a pause, and the job stops if another holder won.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Iterator

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
    etag: str = field(default="", compare=False)  # S3: the version this job wrote last (not stored)

    def describe(self) -> str:
        return (f"{self.holder} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}, "
                f"last renewed {time.time() - self.renewed:.0f} s ago")


def _parse(data: bytes) -> Lease:
    try:
        d = json.loads(data)
        return Lease(d["holder"], d["token"], float(d["since"]), float(d["renewed"]))
    except (ValueError, TypeError, KeyError):  # torn or foreign: treat as stale
        return Lease("unknown", "", 0.0, 0.0)


def _read(loc: storage.Location) -> Lease | None:
    try:
        return _parse(storage.read_bytes(loc))
    except storage.StorageError:
        return None


def _body(lease: Lease) -> bytes:
    return json.dumps({k: v for k, v in asdict(lease).items() if k != "etag"}).encode()


def _conditional(loc: storage.Location) -> bool:
    return isinstance(loc.fs, pafs.S3FileSystem) and not _NO_CONDITIONAL.get(loc.path.partition("/")[0], False)


_NO_CONDITIONAL: dict[str, bool] = {}  # bucket -> the store refused conditional writes


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
    storage.write_bytes(loc, _body(lease))


def _locked(run: storage.Location, loc: storage.Location, held: Lease, ttl_s: float) -> RunLocked:
    return RunLocked(f"{run.uri} is being written by {held.describe()}; wait for that job, or, if it is "
                     f"dead, delete {loc.uri} (it is taken over after {ttl_s:.0f} s without renewal)")


def _fresh(held: Lease | None, ttl_s: float) -> bool:
    return held is not None and time.time() - held.renewed < ttl_s and not _dead_on_this_host(held)


def _acquire_conditional(run: storage.Location, loc: storage.Location, mine: Lease, ttl_s: float) -> Lease:
    """S3: create the lease if absent, or replace exactly the stale version read; one winner."""
    got = storage.read_with_etag(loc)
    held = _parse(got[0]) if got else None
    if _fresh(held, ttl_s):
        raise _locked(run, loc, held, ttl_s)
    etag = storage.put_if(loc, _body(mine), got[1] if got else None)
    if etag is None:  # another job created or took it over between our read and our write
        now_held = _read(loc)
        raise RunLocked(f"{run.uri} was taken by {now_held.describe() if now_held else 'another job'} "
                        f"at the same moment; rerun later")
    mine.etag = etag
    return mine


def acquire(run: storage.Location, ttl_s: float = 120.0) -> Lease:
    loc = run.join(LOCK_NAME)
    now = time.time()
    mine = Lease(f"{socket.gethostname()}:{os.getpid()}", uuid.uuid4().hex, now, now)
    if _conditional(loc):
        try:
            return _acquire_conditional(run, loc, mine, ttl_s)
        except storage.ConditionalUnsupported:
            _NO_CONDITIONAL[loc.path.partition("/")[0]] = True
    if isinstance(run.fs, pafs.LocalFileSystem):
        with _guard(loc):  # read, decide and write as one step against other jobs on this disk
            held = _read(loc)
            if _fresh(held, ttl_s):
                raise _locked(run, loc, held, ttl_s)
            _write(loc, mine)  # written whole under a temporary name, then renamed into place
        return mine
    held = _read(loc)
    if _fresh(held, ttl_s):
        raise _locked(run, loc, held, ttl_s)
    _write(loc, mine)
    time.sleep(1.0)
    now_held = _read(loc)
    if now_held is None or now_held.token != mine.token:
        holder = now_held.describe() if now_held else "another job"
        raise RunLocked(f"{run.uri} was taken over by {holder} at the same moment; rerun later")
    return mine


@contextlib.contextmanager
def _guard(loc: storage.Location) -> Iterator[None]:
    """An exclusive flock on ``_LOCK.guard`` beside the lease (local disks only)."""
    fd = os.open(loc.path + ".guard", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def renew(run: storage.Location, lease: Lease) -> bool:
    """Renew if still ours; False when another job has taken it over."""
    loc = run.join(LOCK_NAME)
    if lease.etag and _conditional(loc):  # replace only the version we wrote: a takeover wins
        lease.renewed = time.time()
        etag = storage.put_if(loc, _body(lease), lease.etag)
        if etag is None:
            return False
        lease.etag = etag
        return True
    with _guard(loc) if isinstance(run.fs, pafs.LocalFileSystem) else contextlib.nullcontext():
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
