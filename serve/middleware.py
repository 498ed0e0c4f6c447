"""ASGI middleware of the Serve app, and the listening rule it depends on.

All of it is plain ASGI so it also covers the OpenAI routes that ``ray.serve.llm`` defines.
Outermost first (see :func:`serve.ingress.fastapi_app`):

* :class:`GenericServerErrorMiddleware`: every 5xx answer becomes one generic line in the OpenAI
  error shape; what the app said (and any exception) goes to the replica's log, redacted.
* CORS (Starlette's), only with an allow-list (``ServeConfig.cors_origins``): it answers the
  preflights of allow-listed origins itself, headers only; ``ray.serve.llm``'s own ``*``
  policy is removed. No allow-list, no CORS layer: a browser on another origin gets no
  ``Access-Control-Allow-Origin`` at all.
* :class:`ApiKeyMiddleware`: 401 without ``Authorization: Bearer KEY`` on every route but
  :data:`OPEN_PATHS`, whatever the method (an ``OPTIONS`` request is no exception).
* :class:`BodyLimitMiddleware`: 413 past ``ServeConfig.max_body_bytes``, by Content-Length and
  by counting the bytes actually streamed.
* :class:`RetryAfterMiddleware`: ``Retry-After`` on 429/503 answers that lack one.

Where the key lives, honestly: ``longwriter serve`` (or ``app_builder`` where ``serve run`` /
``serve deploy`` build the app) resolves it and hands it to the ingress deployment as an
init argument; the replica calls :func:`configure` with it. So it travels inside the
deployment's pickled init args (Serve controller, GCS), not in the replica's environment and
not in the config the dashboard shows (that holds only ``api_key_env``, the variable's name).
Anyone who can run code on the Ray cluster (the dashboard's job API, ``ray.init``) can read it
there: cluster access is key access, so keep the dashboard and the GCS port private. It never
goes into a printed line or a log line of this app (:class:`Secret` masks its repr, and every
log line here passes through :func:`core.redact.redact` with the key as a secret).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import traceback
from typing import Any

from core.redact import redact

logger = logging.getLogger("ray.serve")

# Routes anyone may call: liveness and readiness (probes send no key), and the static
# playground page (it holds no data; its API calls carry the key the user types in).
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/favicon.ico"})

_state: dict[str, Any] = {"api_key": None, "retry_after_s": 5.0}

# The one line each 5xx answer carries (RFC 9110 reason phrases, plus what to do).
GENERIC_5XX = {
    500: ("internal server error", "internal_error"),
    502: ("bad gateway", "upstream_error"),
    503: ("service unavailable: the server is overloaded (backpressure) or not ready; retry after Retry-After seconds",
          "overloaded"),
    504: ("gateway timeout: the request did not finish in time", "timeout"),
}


class Secret:
    """A string that prints as ``***`` (repr, str, logs); ``.value`` has the real one."""

    __slots__ = ("value",)

    def __init__(self, value: str | None):
        self.value = value or None

    def __repr__(self) -> str:
        return "Secret(***)" if self.value else "Secret(None)"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


def configure(api_key: str | Secret | None, retry_after_s: float) -> None:
    """Set by the ingress replica at start-up (the key comes in by value, see the module doc)."""
    _state["api_key"] = (api_key.value if isinstance(api_key, Secret) else api_key) or None
    _state["retry_after_s"] = retry_after_s


def secrets() -> tuple[str, ...]:
    """What :func:`core.redact.redact` must mask in this process's output, besides its patterns."""
    return (_state["api_key"],) if _state["api_key"] else ()


def retry_after() -> str:
    return str(max(1, round(_state["retry_after_s"])))


# ------------------------------------------------------------------ listening rule


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; any other name or address (0.0.0.0, ::) is not."""
    if not host:
        return False
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def listen_refusal(host: str | None, api_key: str | None, insecure_no_key: bool,
                   key_env: str | None = "LONGWRITER_API_KEY") -> str | None:
    """Why an app must not start (listening beyond loopback without a key), or None if it may."""
    if api_key or insecure_no_key or is_loopback(host):
        return None
    where = f"set ${key_env} where the app is built" if key_env else "set serve.api_key_env (or --api-key)"
    return (f"refusing to serve on {host or 'an unknown host'} without an API key: {where}, or pass "
            "--insecure-no-key (insecure_no_key: true) to accept anyone who can reach the port")


# ------------------------------------------------------------------ helpers


def _path(scope: dict[str, Any]) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def error_body(code: int, message: str, kind: str) -> dict[str, Any]:
    """The OpenAI error shape the inherited routes use: {"error": {message, type, code}}."""
    return {"error": {"message": message, "type": kind, "code": code}}


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


def generic_5xx(code: int, scope: dict[str, Any] | None = None) -> dict[str, Any]:
    message, kind = GENERIC_5XX.get(code, ("server error", "server_error"))
    rid = _header(scope or {}, b"x-request-id")
    if rid and len(rid) <= 64 and rid.replace("-", "").isalnum():
        message += f" (request id {rid})"
    return error_body(code, message, kind)


# ------------------------------------------------------------------ middleware


class _HttpMiddleware:
    """Pure ASGI middleware that acts on HTTP requests only (lifespan and the rest pass through)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


class GenericServerErrorMiddleware(_HttpMiddleware):
    """Every 5xx answer: one generic line (OpenAI shape, the status kept, headers such as
    Retry-After kept); the original body and any exception go to the log, redacted.

    An exception that escapes the app is answered here (500) instead of reaching Starlette's
    last-resort handler, whose body would quote it. A response already streaming (SSE, status
    200) cannot change status; its own error events are made generic by the ingress.
    """

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        st: dict[str, Any] = {"started": False, "status": 0, "headers": [], "held": []}

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                st["started"], st["status"] = True, int(message["status"])
                if st["status"] < 500:
                    await send(message)
                else:
                    st["headers"] = [(k, v) for k, v in message.get("headers") or []
                                     if k.lower() not in (b"content-length", b"content-type", b"content-encoding")]
                return
            if message["type"] == "http.response.body" and st["status"] >= 500:
                st["held"].append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._replace(scope, send, st)
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception as e:  # noqa: BLE001 - answered generically, logged in full (redacted)
            logger.error("%s %s: unhandled %s: %s", scope.get("method"), _path(scope), type(e).__name__,
                         redact("".join(traceback.format_exception(e)), secrets()))
            if not st["started"]:
                await _send_json(send, 500, generic_5xx(500, scope))
            elif st["status"] >= 500:
                await self._replace(scope, send, st)
            else:
                raise  # a response under way breaks off as before (the server closes the connection)

    @staticmethod
    async def _replace(scope: dict[str, Any], send: Any, st: dict[str, Any]) -> None:
        if st.get("done"):
            return
        st["done"] = True
        original = b"".join(st["held"])[:4000].decode("utf-8", "replace")
        level = logging.WARNING if st["status"] in (503, 504) else logging.ERROR  # overload is routine
        logger.log(level, "%s %s -> %d: %s", scope.get("method"), _path(scope), st["status"],
                   redact(" ".join(original.split()), secrets()))
        await _send_json(send, st["status"], generic_5xx(st["status"], scope), st["headers"])


class ApiKeyMiddleware(_HttpMiddleware):
    """401 unless ``Authorization: Bearer KEY`` matches, on every route but :data:`OPEN_PATHS`.

    Every method counts, ``OPTIONS`` included. The one unauthenticated ``OPTIONS`` answer is a
    CORS preflight from an allow-listed origin, which the CORS layer outside this one answers
    with headers only (browsers never send credentials on a preflight) and never passes on.
    """

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = _state["api_key"]
        if key and _path(scope) not in OPEN_PATHS:
            given = _header(scope, b"authorization") or ""
            if not hmac.compare_digest(given.encode("latin-1", "replace"), f"Bearer {key}".encode()):
                err = error_body(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                 "authentication_error")
                await _send_json(send, 401, err, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    status_code = 413  # what ray.serve.llm's handler answers if the app sees this first


class BodyLimitMiddleware(_HttpMiddleware):
    """413 for a body over ``limit`` bytes: a larger Content-Length is refused before any byte is
    read; a body without one (chunked) is counted as it streams in, and the app's answer to
    the cut-off body is replaced by the 413."""

    def __init__(self, app: Any, limit: int = 1 << 20):
        super().__init__(app)
        self.limit = int(limit)

    def _answer(self) -> dict[str, Any]:
        return error_body(413, f"request body over {self.limit} bytes", "request_too_large")

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False  # the server (uvicorn) rejects a malformed Content-Length itself
            if too_big:
                await _send_json(send, 413, self._answer(), [(b"connection", b"close")])
                return
        st = {"seen": 0, "over": False, "sent": False}

        async def counted_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                st["seen"] += len(message.get("body", b""))
                if st["seen"] > self.limit:
                    st["over"] = True
                    raise _BodyTooLarge(f"request body over {self.limit} bytes")
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if st["over"]:  # the app answers its broken read: send the 413 instead, once
                if not st["sent"]:
                    st["sent"] = True
                    await _send_json(send, 413, self._answer(), [(b"connection", b"close")])
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if st["over"] and not st["sent"]:
            st["sent"] = True
            await _send_json(send, 413, self._answer(), [(b"connection", b"close")])


class RetryAfterMiddleware(_HttpMiddleware):
    """Adds ``Retry-After`` to 429/503 answers that lack one (overload inside the ingress)."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"retry-after" for k, _ in headers):
                    headers.append((b"retry-after", retry_after().encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)
