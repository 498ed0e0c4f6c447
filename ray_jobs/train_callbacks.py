"""The trainer callbacks each Ray Train worker adds to its trl trainer (``ray_jobs.train_worker``).

Imported on the workers only: importing this module imports transformers.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from transformers import TrainerCallback


class _JobCallback(TrainerCallback):
    def __init__(self, job: str, rank: int) -> None:
        self.job, self.rank = job, rank


class Progress(_JobCallback):
    """One compact line per log on rank 0 (visible in the driver); replaces the PrinterCallback."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if self.rank != 0 or not logs or "loss" not in logs:
            return
        extra = "".join(f" {k.split('/')[-1]} {logs[k]:.4f}" for k in ("rewards/margins", "rewards/accuracies")
                        if k in logs)
        print(f"[{self.job}] step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
              f"lr {logs.get('learning_rate', 0):.2e}{extra}", flush=True)


class Saved(_JobCallback):
    """Runs after RayTrainReportCallback: the checkpoint is in the run's storage now."""

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.rank == 0:
            print(f"[{self.job}] step {state.global_step}: checkpoint stored", flush=True)


class FailOnce(TrainerCallback):
    """Testing hook (--fail-at-step): the last worker exits hard once, before any checkpoint was restored."""

    def __init__(self, job: str, rank: int, world: int, fail_at_step: int, resumed: bool, workdir: str) -> None:
        self.job, self.rank, self.world = job, rank, world
        self.fail_at_step, self.resumed, self.workdir = fail_at_step, resumed, workdir

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.fail_at_step and not self.resumed and self.rank == self.world - 1:
            print(f"[{self.job}] fail_at_step: rank {self.rank} exits at step {state.global_step}", flush=True)
            time.sleep(2.0)  # let the controller collect the checkpoint reported before this step
            shutil.rmtree(self.workdir, ignore_errors=True)
            os._exit(1)
