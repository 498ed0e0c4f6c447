"""One-line error text: every message a user reads is one line, whatever the exception held."""

from __future__ import annotations


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """The message with whitespace runs (newlines too) folded to one space; the type's name when empty."""
    msg = " ".join(str(e).split())
    if not msg and isinstance(e, BaseException):
        msg = type(e).__name__
    return msg[:limit]


def last_line(e: BaseException, limit: int = 400) -> str:
    """The innermost ``SomeError: message`` line of a multi-line message (a remote or chained
    traceback puts the cause last), else its last non-empty line, else the type's name."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^", "~")):
            return ln[:limit]
    return (lines[-1] if lines else type(e).__name__)[:limit]
