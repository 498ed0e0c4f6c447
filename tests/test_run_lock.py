"""One writer per run (core.run_lock) on a real S3 endpoint (moto server) and a local disk:
of jobs starting at the same moment exactly one wins, a stale lease is taken over, and the job
it was taken from learns so at its next renewal."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from core import run_lock, storage

pytestmark = pytest.mark.timeout(120)


def race(run: storage.Location, n: int = 4) -> list[object]:
    """n acquirers released at once; each result is a Lease or the RunLocked it raised."""
    gate, out = threading.Barrier(n), [None] * n

    def go(i: int) -> None:
        gate.wait()
        try:
            out[i] = run_lock.acquire(run, ttl_s=60)
        except run_lock.RunLocked as e:
            out[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("where", ["s3", "local"])
def test_of_simultaneous_starts_exactly_one_wins(where: str, tmp_path: Path, request) -> None:
    for attempt in range(3):
        if where == "s3":
            request.getfixturevalue("s3_server")
            run = storage.resolve(f"s3://lwtest/locks/{uuid.uuid4().hex}/run_id=r")
        else:
            run = storage.resolve(str(tmp_path / f"a{attempt}" / "run_id=r"))
            storage.makedirs(run)
        out = race(run)
        winners = [o for o in out if isinstance(o, run_lock.Lease)]
        assert len(winners) == 1, out
        assert all("being written by" in str(o) or "at the same moment" in str(o) for o in out if o not in winners)
        if where == "s3":
            assert winners[0].etag  # taken with a conditional write, not write-then-read-back


def test_stale_s3_lease_is_taken_over_and_its_holder_loses_it(s3_server) -> None:
    run = storage.resolve(f"s3://lwtest/locks/{uuid.uuid4().hex}/run_id=r")
    old = run_lock.acquire(run, ttl_s=60)
    assert run_lock.renew(run, old)  # renewing our own version works
    with pytest.raises(run_lock.RunLocked, match="being written by"):
        run_lock.acquire(run, ttl_s=60)
    time.sleep(1.2)
    new = run_lock.acquire(run, ttl_s=1)  # not renewed for over ttl: a dead job's lease
    assert new.token != old.token
    assert not run_lock.renew(run, old)  # the old holder finds out at its next beat
    assert run_lock.renew(run, new)
    run_lock.release(run, new)
    assert run_lock.acquire(run, ttl_s=60).token  # released: free again
