"""The ingress deployment: ray.serve.llm's OpenAI router plus ``/v1/longwrite``, health and playground.

Subclassing ``OpenAiIngress`` keeps vLLM's OpenAI protocol and serving code for
``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (nothing hand-written);
the long-form route runs AgentWrite here, in the ingress replica, and sends each engine call
to the autoscaled LLMServer replicas through a deployment handle.

Failing closed (see :mod:`serve.middleware`): the API key comes in by value (``api_key``);
CORS is closed unless ``serve_cfg.cors_origins`` lists origins; bodies over
``max_body_bytes`` get 413; more than ``max_documents_in_flight`` documents at once on this
replica get 429 + Retry-After; every 5xx answer (and every 5xx error event of a stream) is
one generic line, the details going to this replica's log, redacted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
import weakref
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray.serve.llm.ingress import OpenAiIngress

from core.agentwrite import AgentWriter
from core.config import AgentWriteConfig, ServeConfig
from core.errors import one_line
from core.redact import redact
from serve import middleware
from serve.handle_engine import LLMServerEngine
from serve.protocol import LongWriteRequest, sse, usage

PLAYGROUND = Path(__file__).with_name("static") / "playground.html"
KEEPALIVE_S = 15.0  # an SSE comment this often, so idle proxies do not drop a slow section
logger = logging.getLogger("ray.serve")


class LongWriteIngress(OpenAiIngress):
    """OpenAI routes (inherited) and the long-form routes of this project."""

    def __init__(self, llm_deployments: dict[str, Any], model_cards: dict[str, Any], *,
                 serve_cfg: ServeConfig, agentwrite_cfg: AgentWriteConfig, tokenizer_path: str,
                 max_model_len: int, device: str, api_key: middleware.Secret | None = None):
        super().__init__(llm_deployments, model_cards)
        self._model_id = next(iter(model_cards))
        self._scfg, self._acfg = serve_cfg, agentwrite_cfg
        # By value from where the app was built (serve.app.app_builder), never this replica's env.
        middleware.configure(api_key, serve_cfg.retry_after_s)
        self._in_flight = 0  # documents this replica is writing (/v1/longwrite)
        self._engine = LLMServerEngine(llm_deployments[self._model_id], self._model_id, tokenizer_path,
                                       max_model_len, seeds=device == "gpu")
        self._page = PLAYGROUND.read_text(encoding="utf-8").replace("{{MODEL}}", self._model_id)

    # -- plain routes

    async def health(self) -> dict[str, str]:
        """Liveness of the ingress (no key needed)."""
        return {"status": "ok"}

    async def ready(self) -> Response:
        """Readiness: the model replicas answer their health check."""
        try:
            await asyncio.wait_for(self._default_serve_handles[self._model_id].check_health.remote(), 30)
        except Exception as e:  # noqa: BLE001 - any failure means not ready (503: a generic body)
            logger.warning("not ready: %s", redact(f"{type(e).__name__}: {e}", middleware.secrets()))
            return JSONResponse({"ready": False, "model": self._model_id}, status_code=503)
        return JSONResponse({"ready": True, "model": self._model_id})

    async def playground(self) -> HTMLResponse:
        return HTMLResponse(self._page)

    # -- long form

    async def longwrite(self, body: LongWriteRequest, request: Request) -> Response:
        """Write one long document with AgentWrite; with ``stream`` as server-sent events.

        At most ``max_documents_in_flight`` at once on this replica (a document holds its slot
        until its stream ends); past it: 429 + Retry-After, before any engine work.
        """
        if body.model is not None and body.model != self._model_id:
            return _error(404, f"model {body.model!r} is not served here; this app serves {self._model_id!r}",
                          "model_not_found")
        cap = self._scfg.max_documents_in_flight
        if self._in_flight >= cap:
            return _error(429, f"{cap} documents in flight on this replica already; retry after "
                               f"{middleware.retry_after()} s", "rate_limit_exceeded",
                          headers={"Retry-After": middleware.retry_after()})
        over = {k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p), ("seed", body.seed))
                if v is not None}
        writer = AgentWriter(self._engine, dataclasses.replace(self._acfg, **over))
        doc_id = f"lw-{uuid.uuid4().hex[:16]}"
        slot = _Slot(self)  # taken with no await since the check: no other request slips in between
        if body.stream:
            stream = self._stream(writer, body, doc_id, slot)
            weakref.finalize(stream, slot.release)  # a stream that never starts still gives it back
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            doc = await asyncio.wait_for(self._write(writer, body, doc_id), self._scfg.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(504, f"document not finished within {self._scfg.request_timeout_s:.0f} s", "timeout")
        finally:
            slot.release()
        if doc.status != "ok" and doc.retryable:  # an engine failure: the details stay in the log
            logger.error("document %s failed: %s", doc_id, redact(doc.error, middleware.secrets()))
            return _error(503, "document failed", "document_failed")  # body: the generic 503 line
        if doc.status != "ok":
            return _error(422, redact(doc.error, middleware.secrets()), "document_failed", document=_record(doc))
        return JSONResponse({"document": doc.to_json(), "usage": usage(doc)})

    async def _write(self, writer: AgentWriter, body: LongWriteRequest, doc_id: str, on_event: Any = None) -> Any:
        if body.mode == "direct":
            doc = await writer.write_direct(body.instruction, doc_id=doc_id, length=body.length)
            if on_event is not None:
                on_event("done", doc)
            return doc
        return await writer.write(body.instruction, doc_id=doc_id, length=body.length, on_event=on_event)

    async def _stream(self, writer: AgentWriter, body: LongWriteRequest, doc_id: str,
                      slot: _Slot) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()

        def on_event(kind: str, doc: Any) -> None:
            if kind == "plan":
                queue.put_nowait(sse("plan", {"id": doc.id, "target_words": doc.target_words,
                                              "target_source": doc.target_source, "plan": doc.plan}))
            elif kind == "section":
                s = doc.sections[-1]
                queue.put_nowait(sse("section", {"index": s.index, "of": len(doc.plan), "point": s.point,
                                                 "budget": s.budget, "words": s.words, "text": s.text}))
            elif kind == "done" and doc.status == "ok":
                queue.put_nowait(sse("done", {"document": doc.to_json(), "usage": usage(doc)}))
            elif kind == "done" and doc.retryable:  # an engine failure: generic, like a 503 answer
                logger.error("document %s failed: %s", doc.id, redact(doc.error, middleware.secrets()))
                queue.put_nowait(sse("error", {"message": middleware.generic_5xx(503)["error"]["message"],
                                               "code": 503}))
            elif kind == "done":
                queue.put_nowait(sse("error", {"message": redact(doc.error, middleware.secrets()), "code": 422,
                                               "document": _record(doc)}))

        task = asyncio.create_task(self._write(writer, body, doc_id, on_event))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._scfg.request_timeout_s
        getter: asyncio.Future[str] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    getter = None
                elif task in done:
                    while not queue.empty():
                        yield queue.get_nowait()
                    if not task.cancelled() and task.exception() is not None:
                        yield _error_event(task.exception())
                    return
                elif loop.time() > deadline:
                    yield sse("error", {"message": "document not finished in time", "code": 504})
                    return
                else:
                    yield ": keep-alive\n\n"
        finally:
            slot.release()
            for t in (getter, task):  # client went away: stop spending engine time on it
                if t is not None and not t.done():
                    t.cancel()


class _Slot:
    """One document's place in its replica's in-flight count; :meth:`release` is idempotent."""

    def __init__(self, ingress: LongWriteIngress):
        self._ingress: LongWriteIngress | None = ingress
        ingress._in_flight += 1

    def release(self) -> None:
        if self._ingress is not None:
            self._ingress._in_flight -= 1
            self._ingress = None


def _error(code: int, message: str, kind: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error in the OpenAI shape the inherited routes use: {"error": {message, type, code}}.
    A 5xx body is replaced by its generic line on the way out (middleware)."""
    return JSONResponse({**middleware.error_body(code, message, kind), **extra}, status_code=code, headers=headers)


def _record(doc: Any) -> dict[str, Any]:
    """A failed document's record for the client, its error text redacted."""
    rec = doc.to_json()
    if rec.get("error"):
        rec["error"] = redact(rec["error"], middleware.secrets())
    return rec


def _error_event(e: BaseException) -> str:
    """An error event for an exception that escaped AgentWrite: 4xx say what; 5xx (the default)
    are one generic line, the exception going to the log (redacted)."""
    try:
        code = int(getattr(e, "status_code", 500))
    except (TypeError, ValueError):
        code = 500
    if not 400 <= code < 500:
        code = code if 500 <= code < 600 else 500
        logger.error("stream failed (%d): %s", code,
                     redact(f"{type(e).__name__}: {one_line(e, 10_000)}", middleware.secrets()))
        return sse("error", {"message": middleware.generic_5xx(code)["error"]["message"], "code": code})
    return sse("error", {"message": redact(one_line(e, 10_000), middleware.secrets()), "code": code})


def endpoint_map() -> dict[str, Any]:
    """Routes of :class:`LongWriteIngress`: ray.serve.llm's generation routes plus ours."""
    from ray_jobs.ray_private import openai_routes

    routes = openai_routes(("models", "model_data", "completions", "chat"))
    routes.update({
        "longwrite": lambda app: app.post("/v1/longwrite"),
        "health": lambda app: app.get("/health"),
        "ready": lambda app: app.get("/ready"),
        "playground": lambda app: app.get("/", response_class=HTMLResponse),
    })
    return routes


def fastapi_app(cfg: ServeConfig | None = None) -> FastAPI:
    """ray.serve.llm's app (400 on validation errors) without its CORS ``*`` policy, with ours
    outside it. Outermost first: generic 5xx, CORS (only with ``cfg.cors_origins``), API key,
    body limit, Retry-After; see :mod:`serve.middleware`."""
    from fastapi.middleware.cors import CORSMiddleware
    from ray_jobs.ray_private import openai_app

    cfg = cfg or ServeConfig()
    app = openai_app()
    app.title = "longwriter-ray"
    # ray.serve.llm allows every origin, with credentials: drop it (the stack is built lazily,
    # at the first request, so removing the entry here is enough).
    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.add_middleware(middleware.RetryAfterMiddleware)
    app.add_middleware(middleware.BodyLimitMiddleware, limit=cfg.max_body_bytes)
    app.add_middleware(middleware.ApiKeyMiddleware)
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    app.add_middleware(middleware.GenericServerErrorMiddleware)
    return app
