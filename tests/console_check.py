"""What counts as `longwriter`'s own terminal output (for tests of the quiet default)."""

from __future__ import annotations

import re

OURS = re.compile(r"^(\[(longwriter|write|generate|serve|eval|sft|dpo|make-pairs)\]|\d+ sections|section \d+/\d+"
                  r"|\d+ words \(target|longwriter \w[\w-]*: error:)")


def foreign_lines(stderr: str) -> list[str]:
    """Lines on the terminal that are not ours (tqdm redraws with \\r, so split on it too)."""
    return [ln for ln in re.split(r"[\r\n]+", stderr) if ln.strip() and not OURS.match(ln.strip())]
