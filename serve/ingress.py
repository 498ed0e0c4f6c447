"""The ingress deployment: ray.serve.llm's OpenAI router plus ``/v1/longwrite``, health and playground.

Subclassing ``OpenAiIngress`` keeps vLLM's OpenAI protocol and serving code for
``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (nothing hand-written);
the long-form route runs AgentWrite here, in the ingress replica, and sends each engine call
to the autoscaled LLMServer replicas through a deployment handle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray.serve.llm.ingress import OpenAiIngress

from core.agentwrite import AgentWriter
from core.config import AgentWriteConfig, ServeConfig
from serve import middleware
from serve.handle_engine import LLMServerEngine
from serve.protocol import LongWriteRequest, sse, usage

PLAYGROUND = Path(__file__).with_name("static") / "playground.html"
KEEPALIVE_S = 15.0  # an SSE comment this often, so idle proxies do not drop a slow section


class LongWriteIngress(OpenAiIngress):
    """OpenAI routes (inherited) and the long-form routes of this project."""

    def __init__(self, llm_deployments: dict[str, Any], model_cards: dict[str, Any], *,
                 serve_cfg: ServeConfig, agentwrite_cfg: AgentWriteConfig, tokenizer_path: str,
                 max_model_len: int, device: str):
        super().__init__(llm_deployments, model_cards)
        self._model_id = next(iter(model_cards))
        self._scfg, self._acfg = serve_cfg, agentwrite_cfg
        middleware.configure(serve_cfg.api_key or os.environ.get("LONGWRITER_API_KEY"), serve_cfg.retry_after_s)
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
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"ready": False, "model": self._model_id, "reason": type(e).__name__}, status_code=503)
        return JSONResponse({"ready": True, "model": self._model_id})

    async def playground(self) -> HTMLResponse:
        return HTMLResponse(self._page)

    # -- long form

    async def longwrite(self, body: LongWriteRequest, request: Request) -> Response:
        """Write one long document with AgentWrite; with ``stream`` as server-sent events."""
        if body.model is not None and body.model != self._model_id:
            return _error(404, f"model {body.model!r} is not served here; this app serves {self._model_id!r}",
                          "model_not_found")
        over = {k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p), ("seed", body.seed))
                if v is not None}
        writer = AgentWriter(self._engine, dataclasses.replace(self._acfg, **over))
        doc_id = f"lw-{uuid.uuid4().hex[:16]}"
        if body.stream:
            return StreamingResponse(self._stream(writer, body, doc_id), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            doc = await asyncio.wait_for(self._write(writer, body, doc_id), self._scfg.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(504, f"document not finished within {self._scfg.request_timeout_s:.0f} s", "timeout")
        if doc.status != "ok":
            return _error(503 if doc.retryable else 422, doc.error, "document_failed", document=doc.to_json())
        return JSONResponse({"document": doc.to_json(), "usage": usage(doc)})

    async def _write(self, writer: AgentWriter, body: LongWriteRequest, doc_id: str, on_event: Any = None) -> Any:
        if body.mode == "direct":
            doc = await writer.write_direct(body.instruction, doc_id=doc_id, length=body.length)
            if on_event is not None:
                on_event("done", doc)
            return doc
        return await writer.write(body.instruction, doc_id=doc_id, length=body.length, on_event=on_event)

    async def _stream(self, writer: AgentWriter, body: LongWriteRequest, doc_id: str) -> AsyncIterator[str]:
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
            elif kind == "done":
                queue.put_nowait(sse("error", {"message": doc.error, "code": 503 if doc.retryable else 422,
                                               "document": doc.to_json()}))

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
            for t in (getter, task):  # client went away: stop spending engine time on it
                if t is not None and not t.done():
                    t.cancel()


def _error(code: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    """An error in the OpenAI shape the inherited routes use: {"error": {message, type, code}}."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}, **extra}, status_code=code)


def _error_event(e: BaseException) -> str:
    """An error event for an exception that escaped AgentWrite (overload: 503; else 500, no trace)."""
    code = int(getattr(e, "status_code", 500))
    msg = " ".join(str(e).split()) if code != 500 else "internal error while writing"
    return sse("error", {"message": msg, "code": code})


def endpoint_map() -> dict[str, Any]:
    """Routes of :class:`LongWriteIngress`: ray.serve.llm's generation routes plus ours."""
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    routes = {k: DEFAULT_ENDPOINTS[k] for k in ("models", "model_data", "completions", "chat")}
    routes.update({
        "longwrite": lambda app: app.post("/v1/longwrite"),
        "health": lambda app: app.get("/health"),
        "ready": lambda app: app.get("/ready"),
        "playground": lambda app: app.get("/", response_class=HTMLResponse),
    })
    return routes


def fastapi_app() -> FastAPI:
    """ray.serve.llm's app (400 on validation errors, no stack traces), with our middleware outside."""
    from ray.llm._internal.serve.core.ingress.ingress import init

    app = init()
    app.title = "longwriter-ray"
    app.add_middleware(middleware.RetryAfterMiddleware)
    app.add_middleware(middleware.ApiKeyMiddleware)
    return app
