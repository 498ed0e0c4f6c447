"""Keep secrets out of everything we print or store.

A URL may carry credentials (``https://user:pass@host/v1``, ``?api_key=...``) and an error
message may quote it; an ``Authorization`` header or an ``sk-...`` key may end up in an
exception text. Every string that goes to a terminal line, a log line we write, a Parquet
``error`` column or a ``_SUCCESS`` manifest passes through :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# user:password@ (or token@) in any scheme://authority
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/@:]*(?::[^\s/@]*)?)@")
# query or fragment parameters whose name says secret
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;#](?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|pwd|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|aws_secret_access_key)=)(?P<value>[^&\s#'\"]+)",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<name>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{6,})", re.IGNORECASE)
# OpenAI-style keys and AWS access key ids
_KEYLIKE = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{8,}|(?:AKIA|ASIA)[A-Z0-9]{12,})\b")


def redact(text: object, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with credentials in URLs, bearer tokens, key-like strings and ``secrets`` masked."""
    s = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            s = s.replace(secret, MASK)
    s = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", s)
    s = _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", s)
    s = _BEARER.sub(lambda m: f"{m['name']}{MASK}", s)
    return _KEYLIKE.sub(MASK, s)


def safe_url(url: str | None) -> str | None:
    """A URL fit to show or store: no user info, no secret query parameters."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    return redact(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
