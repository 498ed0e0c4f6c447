"""ASGI middleware of the Serve app: the optional API key, and Retry-After on overload.

Both are plain ASGI so they also cover the OpenAI routes that ``ray.serve.llm`` defines.
The key lives in this module, set by the ingress replica at start-up from
``$LONGWRITER_API_KEY`` on its node (or ``ServeConfig.api_key``): taken from the environment it
never travels in the deployment's options or runtime_env, so it does not show in the dashboard.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

# Routes anyone may call: liveness and readiness (probes send no key), and the static
# playground page (it holds no data; its API calls carry the key the user types in).
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/favicon.ico"})

_state: dict[str, Any] = {"api_key": None, "retry_after_s": 5.0}


def configure(api_key: str | None, retry_after_s: float) -> None:
    _state["api_key"] = api_key or None
    _state["retry_after_s"] = retry_after_s


def _path(scope: dict[str, Any]) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *headers]})
    await send({"type": "http.response.body", "body": raw})


class ApiKeyMiddleware:
    """401 unless ``Authorization: Bearer KEY`` matches, on every route but :data:`OPEN_PATHS`."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = _state["api_key"]
        if scope["type"] == "http" and key and scope.get("method") != "OPTIONS" and _path(scope) not in OPEN_PATHS:
            given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                err = {"message": "missing or wrong API key: send 'Authorization: Bearer <key>'",
                       "type": "authentication_error", "code": 401}
                await _send_json(send, 401, {"error": err}, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class RetryAfterMiddleware:
    """Adds ``Retry-After`` to 429/503 answers that lack one (overload inside the ingress)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"retry-after" for k, _ in headers):
                    headers.append((b"retry-after", str(max(1, round(_state["retry_after_s"]))).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)
