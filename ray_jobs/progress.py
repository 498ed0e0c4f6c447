"""A tiny Ray actor that engine actors report to, so the driver can show live progress."""

from __future__ import annotations

import time

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self.t0 = time.time()
        self.in_flight: set[str] = set()
        self.done = self.failed = self.words = self.tokens = 0

    def started(self, doc_id: str) -> None:
        self.in_flight.add(doc_id)

    def section(self, words: int, tokens: int) -> None:
        self.words += words
        self.tokens += tokens

    def finished(self, doc_id: str, ok: bool) -> None:
        self.in_flight.discard(doc_id)
        if ok:
            self.done += 1
        else:
            self.failed += 1

    def snapshot(self) -> dict:
        secs = max(time.time() - self.t0, 1e-6)
        return {"done": self.done, "failed": self.failed, "in_flight": len(self.in_flight),
                "words": self.words, "tokens_per_s": self.tokens / secs, "elapsed_s": secs}
