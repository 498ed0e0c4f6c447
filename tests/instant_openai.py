"""An instant OpenAI-compatible server (FastAPI on uvicorn, in-process) standing in for an engine.

Used where the test or benchmark is about the pipeline around the engine (the bulk job's
commits, its overhead), not about generation: every plan request gets a one-section JSON plan,
every section fresh non-repeating words, at once or after ``delay_s``. Flagged as a stand-in
wherever it is used.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time

from fastapi import FastAPI, Request  # module level: FastAPI resolves the routes' string hints here

_VOCAB = [f"{a}{b}" for a in ("ta", "ri", "mo", "ke", "lu", "sa", "po", "ne", "vi", "do") for b in
          ("ren", "mal", "tos", "pik", "dur", "len", "vas", "gor", "fin", "bel", "cat", "hom")]


class StandIn:
    """The instant OpenAI-compatible server; records when the first engine call arrived."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.first = self.last = None
        self.calls = 0
        self.port = free_port()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": "instant", "object": "model", "max_model_len": 8192}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict:
            body = await request.json()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            now = time.time()
            self.first = self.first or now
            self.last, self.calls = now, self.calls + 1
            if body.get("response_format"):
                text = json.dumps({"sections": [{"point": "The subject and what follows from it", "words": 100}]})
            else:
                rng = random.Random(self.calls)
                n = max(20, min(int(body.get("max_tokens", 140) / 1.4), 400))
                words = [rng.choice(_VOCAB) for _ in range(n)]
                text = " ".join(w + ("." if i % 12 == 11 else "") for i, w in enumerate(words)).capitalize() + "."
            usage = {"prompt_tokens": 50, "completion_tokens": len(text) // 4, "total_tokens": 50 + len(text) // 4}
            return {"id": f"c{self.calls}", "object": "chat.completion", "model": "instant", "usage": usage,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

        return app

    def start(self) -> None:
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning",
                                               access_log=False))
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.time() + 30
        while not server.started:
            if time.time() > deadline:
                raise SystemExit("the stand-in server did not start")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
