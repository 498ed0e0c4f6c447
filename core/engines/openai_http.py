"""Engine backed by any OpenAI-compatible HTTP server (vLLM, SGLang, TGI, a hosted API).

Why: AgentWrite should run against a model that is already being served somewhere (a Ray
Serve vLLM deployment, a shared GPU box, a hosted endpoint) without loading weights into the
calling process. This module speaks just enough of the OpenAI REST API for the
:class:`~core.engines.base.Engine` protocol: ``/chat/completions``, ``/completions`` and
``/models``. Transient failures (429, 5xx, dropped connections, timeouts) are retried with
exponential backoff; anything else becomes an :class:`EngineError` with a one-line message,
so an API failure can never leak into a document as generated text.

Why httpx and not the ``openai`` client: the installed openai 3.57 refuses to send a request
without a credential ("Missing credentials" for an empty key, "Could not resolve authentication
method" when the Authorization header is omitted), and the endpoints this backend is for are
often keyless vLLM servers, or carry basic-auth credentials in the URL; a placeholder Bearer key
would replace those. Retries, backoff and Retry-After are the few lines below (checked 2026-12).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from core.engines.base import EngineError, GenResult, Message, SamplingSpec, check_one_input

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP_S = 30.0
DEFAULT_MAX_MODEL_LEN = 8192
_SCHEMA_WORDS = ("response_format", "json_schema", "structured_output", "guided_json")


def _snippet(body: str, limit: int = 200) -> str:
    """A short single-line excerpt of an error body, preferring the JSON error message."""
    text = body
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err
        text = err if isinstance(err, str) else json.dumps(err)
    except (ValueError, AttributeError):
        pass
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_S) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def result_from_openai(data: dict[str, Any], chat: bool, latency: float, attempts: int = 1,
                       schema_sent: bool = False) -> GenResult:
    """A :class:`GenResult` from an OpenAI (chat) completion response body."""
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        raise EngineError(f"response has no choices: {_snippet(json.dumps(data))}")
    choice = choices[0]
    text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return GenResult(
        text=text or "",
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        generated_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=latency,
        extra={"attempts": attempts, "json_schema_sent": schema_sent, "id": data.get("id")},
    )


def openai_body(messages: list[Message] | None, prompt: str | None, sp: SamplingSpec, model: str,
                json_schema: bool = True) -> dict[str, Any]:
    """The request body of a (chat) completion for one :class:`SamplingSpec` (vLLM extras included)."""
    chat = messages is not None
    body: dict[str, Any] = {"model": model, "max_tokens": sp.max_tokens, "temperature": sp.temperature,
                            "top_p": sp.top_p}
    body.update({"messages": messages} if chat else {"prompt": prompt})
    if sp.stop:
        body["stop"] = list(sp.stop)
    if sp.seed is not None:
        body["seed"] = sp.seed
    if sp.min_tokens > 0:
        body["min_tokens"] = sp.min_tokens
    if sp.repetition_penalty != 1.0:  # a vLLM extra; plain OpenAI servers do not take it
        body["repetition_penalty"] = sp.repetition_penalty
    if json_schema and sp.json_schema is not None:
        if chat:
            spec = {"name": "output", "schema": sp.json_schema, "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            body["structured_outputs"] = {"json": sp.json_schema}
    return body


def _split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``https://user:pass@host/v1`` -> (``https://host/v1``, basic auth): the URL we keep, log
    and put in error messages then carries no secret; httpx sends the same Authorization."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, httpx.BasicAuth(unquote(user), unquote(password))


class OpenAIHTTPEngine:
    """:class:`Engine` for an OpenAI-compatible server at ``base_url`` (``.../v1``).

    ``json_schema_mode``: ``"auto"`` sends the schema and drops it for good if the server
    rejects it with a 400; ``"on"`` always sends it; ``"off"`` never does (callers validate
    the JSON either way). ``model=None`` / ``max_model_len=None`` are filled in from
    ``GET /models`` on first use (vLLM reports ``max_model_len``; otherwise 8192).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_model_len: int | None = None,
        json_schema_mode: str = "auto",
    ) -> None:
        if json_schema_mode not in ("auto", "on", "off"):
            raise ValueError(f"json_schema_mode must be auto, on or off, not {json_schema_mode!r}")
        base, self._auth = _split_credentials(base_url.rstrip("/"))
        self.base_url = base if base.endswith("/v1") else base + "/v1"  # no credentials: it is shown in errors
        self.model_name: str = model or ""
        self.max_model_len: int = max_model_len or DEFAULT_MAX_MODEL_LEN
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.json_schema_mode = json_schema_mode
        self._schema_supported = json_schema_mode != "off"
        self._penalty_supported = True  # repetition_penalty is a vLLM extra; OpenAI itself rejects it
        self._need_discovery = model is None or max_model_len is None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    # -- plumbing -------------------------------------------------------------------------
    def _get_client(self) -> httpx.AsyncClient:
        """One client per instance, recreated if we are now running on a different loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
            self._client = httpx.AsyncClient(headers=headers, timeout=timeout, auth=self._auth)
            self._loop, self._lock = loop, asyncio.Lock()
        return self._client

    def _backoff(self, attempt: int) -> float:
        base = self.backoff_s * (2**attempt)
        return min(base + random.uniform(0, 0.1 * base), RETRY_AFTER_CAP_S)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, retries: int | None = None
    ) -> tuple[httpx.Response, float, int]:
        """Send with retries; returns (2xx response, latency of that attempt, attempts)."""
        client = self._get_client()
        url = f"{self.base_url}{path}"
        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            start = time.perf_counter()
            wait: float | None = None
            try:
                resp = await client.request(method, url, json=body)
            except httpx.TransportError as exc:
                detail = " ".join(f"{type(exc).__name__}: {exc}".split())
                if isinstance(exc, httpx.TimeoutException):
                    last = f"timed out after {self.timeout_s:g}s ({detail})"
                elif isinstance(exc, httpx.ConnectError):
                    last = f"cannot reach {self.base_url}: connection refused ({detail})"
                else:
                    last = f"connection error ({detail})"
            else:
                latency = time.perf_counter() - start
                if resp.is_success:
                    return resp, latency, attempt + 1
                last = f"HTTP {resp.status_code}: {_snippet(resp.text)}"
                if resp.status_code not in RETRY_STATUSES:
                    hint = ""
                    if resp.status_code in (401, 403):
                        hint = " (check the API key: pass api_key= or set OPENAI_API_KEY)"
                    raise EngineError(f"{method} {url} failed: {last}{hint}")
                wait = _retry_after(resp)
            if attempt < retries:
                await asyncio.sleep(self._backoff(attempt) if wait is None else wait)
        n = retries + 1
        if last.startswith("cannot reach"):
            raise EngineError(f"{last} after {n} attempts ({method} {url})")
        raise EngineError(f"{method} {url} failed after {n} attempts: {last}")

    @staticmethod
    def _json(resp: httpx.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise EngineError(f"{resp.request.url} returned non-JSON: {_snippet(resp.text)}")
        return data

    async def _discover(self) -> None:
        """Fill in model_name / max_model_len from GET /models (once)."""
        if not self._need_discovery:
            return
        self._get_client()
        assert self._lock is not None
        async with self._lock:
            if not self._need_discovery:
                return
            if self.model_name:  # only the context length is missing: best effort, no retries
                try:
                    entries = await self._model_entries(retries=0)
                except EngineError:
                    entries = []
            else:
                entries = await self._model_entries()
                if not entries:
                    raise EngineError(f"GET {self.base_url}/models listed no models")
                self.model_name = str(entries[0]["id"])
            entry = next((e for e in entries if e.get("id") == self.model_name), None)
            if entry and isinstance(entry.get("max_model_len"), int):
                self.max_model_len = entry["max_model_len"]
            self._need_discovery = False

    async def _model_entries(self, retries: int | None = None) -> list[dict[str, Any]]:
        resp, _, _ = await self._request("GET", "/models", retries=retries)
        data = self._json(resp).get("data") or []
        return [e for e in data if isinstance(e, dict) and "id" in e]

    # -- Engine protocol --------------------------------------------------------------------
    async def list_models(self) -> list[str]:
        return [str(e["id"]) for e in await self._model_entries()]

    async def generate(self, messages: list[Message] | None = None, *, prompt: str | None = None,
                       sampling: SamplingSpec | None = None) -> GenResult:
        check_one_input(messages, prompt)
        sp = sampling or SamplingSpec()
        await self._discover()
        chat = messages is not None
        path = "/chat/completions" if chat else "/completions"
        schema_sent = sp.json_schema is not None and self._schema_supported
        body = openai_body(messages, prompt, sp, self.model_name, json_schema=schema_sent)
        if not self._penalty_supported:
            body.pop("repetition_penalty", None)
        try:
            resp, latency, attempts = await self._request("POST", path, body)
        except EngineError as exc:
            # Optional extras a server rejects with a 400 are dropped once and remembered.
            msg = str(exc)
            lower = msg.lower()
            if "HTTP 400" not in msg:
                raise
            if schema_sent and self.json_schema_mode == "auto" and any(w in lower for w in _SCHEMA_WORDS):
                self._schema_supported = schema_sent = False
                body.pop("response_format", None)
                body.pop("structured_outputs", None)
            elif "repetition_penalty" in body and "repetition_penalty" in lower:
                self._penalty_supported = False
                body.pop("repetition_penalty")
            else:
                raise
            resp, latency, attempts = await self._request("POST", path, body)
            attempts += 1
        return result_from_openai(self._json(resp), chat, latency, attempts, schema_sent)

    def count_tokens(self, messages: list[Message]) -> int:
        """An *estimate* (no tokenizer here): ~3.5 characters a token plus 4 per message."""
        return sum(math.ceil(len(m.get("content") or "") / 3.5) + 4 for m in messages)

    async def close(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None and not client.is_closed:
            try:
                await client.aclose()
            except RuntimeError:  # created on a loop that is gone; nothing left to release
                pass
