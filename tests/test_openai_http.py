"""OpenAIHTTPEngine against a real scripted HTTP server on 127.0.0.1 (no httpx mocks)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from core.engines.base import Engine, EngineError, SamplingSpec
from core.engines.openai_http import OpenAIHTTPEngine

pytestmark = pytest.mark.timeout(30)

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]  # status, body, headers


def chat_reply(text: str = "hello", finish: str = "stop", cached: int | None = 3) -> Reply:
    usage: dict[str, Any] = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    body = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": usage,
    }
    return 200, body, {}


def completion_reply(text: str = "world", finish: str = "length") -> Reply:
    body = {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 9},
    }
    return 200, body, {}


MODELS: Reply = (200, {"object": "list", "data": [
    {"id": "served-model", "object": "model", "max_model_len": 32768},
    {"id": "other", "object": "model"},
]}, {})


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    """Replies come from ``script`` (a queue per path), else from ``default`` per path."""

    url: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    default: dict[str, Callable[[], Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, path: str) -> Reply:
        with self.lock:
            queue = self.script.get(path)
            if queue:
                return queue.pop(0)
        if path in self.default:
            return self.default[path]()
        return 404, {"error": {"message": f"no route {path}"}}, {}

    def hits(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with server.lock:
                server.requests.append(
                    Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            status, payload, headers = server.next_reply(self.path)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:  # keep pytest output quiet
            pass

    return Handler


@pytest.fixture
def server():
    fake = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    fake.default = {
        "/v1/chat/completions": chat_reply,
        "/v1/completions": completion_reply,
        "/v1/models": lambda: MODELS,
    }
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def make_engine(server: FakeServer, **kw: Any) -> OpenAIHTTPEngine:
    kw.setdefault("model", "m")
    kw.setdefault("max_model_len", 4096)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("api_key", "")
    return OpenAIHTTPEngine(server.url + "/v1", **kw)


def run(engine: OpenAIHTTPEngine, **kw: Any):
    async def go():
        try:
            return await engine.generate(**kw)
        finally:
            await engine.close()

    return asyncio.run(go())


MSGS = [{"role": "user", "content": "hi"}]


def test_protocol_and_base_url():
    eng = OpenAIHTTPEngine("http://h:1", model="x", api_key="")
    assert isinstance(eng, Engine)
    assert eng.base_url == "http://h:1/v1"
    assert OpenAIHTTPEngine("http://h:1/v1/", model="x").base_url == "http://h:1/v1"
    assert eng.max_model_len == 8192
    assert eng.count_tokens([{"role": "user", "content": "a" * 7}, {"role": "system", "content": ""}]) == 10


def test_chat_success_maps_usage(server):
    eng = make_engine(server)
    res = run(eng, messages=MSGS, sampling=SamplingSpec(max_tokens=50, temperature=0.2, top_p=0.9,
                                                        stop=["END"], seed=7))
    assert (res.text, res.finish_reason) == ("hello", "stop")
    assert (res.prompt_tokens, res.cached_tokens, res.generated_tokens) == (11, 3, 5)
    assert res.latency_s > 0
    (req,) = server.hits("/v1/chat/completions")
    assert req.method == "POST"
    assert req.body == {"model": "m", "messages": MSGS, "max_tokens": 50, "temperature": 0.2,
                        "top_p": 0.9, "stop": ["END"], "seed": 7}
    assert "authorization" not in req.headers


def test_completion_success_and_no_cached_details(server):
    res = run(make_engine(server), prompt="once upon")
    assert (res.text, res.finish_reason) == ("world", "length")
    assert (res.prompt_tokens, res.cached_tokens, res.generated_tokens) == (7, 0, 9)
    (req,) = server.hits("/v1/completions")
    assert req.body["prompt"] == "once upon" and "messages" not in req.body


def test_exactly_one_input(server):
    with pytest.raises(ValueError):
        run(make_engine(server))
    with pytest.raises(ValueError):
        run(make_engine(server), messages=MSGS, prompt="x")


def test_json_schema_min_tokens_and_penalty_forwarded(server):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    eng = make_engine(server)
    run(eng, messages=MSGS, sampling=SamplingSpec(min_tokens=20, json_schema=schema, repetition_penalty=1.15))
    run(eng, prompt="p", sampling=SamplingSpec(json_schema=schema))
    (chat,) = server.hits("/v1/chat/completions")
    assert chat.body["min_tokens"] == 20 and chat.body["repetition_penalty"] == 1.15
    assert chat.body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    (comp,) = server.hits("/v1/completions")
    assert comp.body["structured_outputs"] == {"json": schema}
    assert "min_tokens" not in comp.body  # only sent when > 0
    assert "repetition_penalty" not in comp.body  # a vLLM extra: only sent when asked for


def test_schema_rejected_falls_back_once_and_remembers(server):
    server.script["/v1/chat/completions"] = [
        (400, {"error": {"message": "response_format json_schema is not supported"}}, {})]
    eng = make_engine(server)
    schema = {"type": "object"}
    res = run(eng, messages=MSGS, sampling=SamplingSpec(json_schema=schema))
    assert res.text == "hello" and res.extra["json_schema_sent"] is False
    run(eng, messages=MSGS, sampling=SamplingSpec(json_schema=schema))
    bodies = [r.body for r in server.hits("/v1/chat/completions")]
    assert len(bodies) == 3
    assert "response_format" in bodies[0]
    assert "response_format" not in bodies[1] and "response_format" not in bodies[2]


def test_penalty_rejected_is_dropped_once_and_remembered(server):
    """A plain OpenAI server rejects vLLM's repetition_penalty: resampled calls still work."""
    server.script["/v1/chat/completions"] = [
        (400, {"error": {"message": "Unrecognized request argument supplied: repetition_penalty"}}, {})]
    eng = make_engine(server)
    for _ in range(2):
        assert run(eng, messages=MSGS, sampling=SamplingSpec(repetition_penalty=1.15)).text == "hello"
    bodies = [r.body for r in server.hits("/v1/chat/completions")]
    assert len(bodies) == 3 and bodies[0]["repetition_penalty"] == 1.15
    assert "repetition_penalty" not in bodies[1] and "repetition_penalty" not in bodies[2]


def test_schema_rejected_with_mode_on_raises(server):
    server.script["/v1/chat/completions"] = [
        (400, {"error": {"message": "response_format not supported"}}, {})]
    with pytest.raises(EngineError, match="HTTP 400"):
        run(make_engine(server, json_schema_mode="on"), messages=MSGS,
            sampling=SamplingSpec(json_schema={"type": "object"}))
    assert len(server.hits("/v1/chat/completions")) == 1


def test_retries_429_then_500_then_success(server):
    server.script["/v1/chat/completions"] = [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        (500, "boom", {}),
    ]
    res = run(make_engine(server), messages=MSGS)
    assert res.text == "hello" and res.extra["attempts"] == 3
    assert len(server.hits("/v1/chat/completions")) == 3


def test_retry_after_is_honoured(server):
    # backoff_s=5 would take seconds; Retry-After: 0 makes the retry immediate.
    server.script["/v1/chat/completions"] = [(503, "busy", {"Retry-After": "0"})]
    loop_time = asyncio.run(_timed(make_engine(server, backoff_s=5.0)))
    assert loop_time < 2.0
    assert len(server.hits("/v1/chat/completions")) == 2


async def _timed(eng: OpenAIHTTPEngine) -> float:
    start = asyncio.get_running_loop().time()
    try:
        await eng.generate(MSGS)
    finally:
        await eng.close()
    return asyncio.get_running_loop().time() - start


def test_persistent_503_gives_up(server):
    server.default["/v1/chat/completions"] = lambda: (503, {"error": {"message": "overloaded"}}, {})
    with pytest.raises(EngineError) as info:
        run(make_engine(server, max_retries=2), messages=MSGS)
    msg = str(info.value)
    assert len(server.hits("/v1/chat/completions")) == 3
    assert "\n" not in msg
    assert f"POST {server.url}/v1/chat/completions failed after 3 attempts: HTTP 503: overloaded" == msg


def test_400_fails_immediately(server):
    server.default["/v1/chat/completions"] = lambda: (400, {"error": {"message": "bad\nrequest"}}, {})
    with pytest.raises(EngineError, match="HTTP 400: bad request") as info:
        run(make_engine(server), messages=MSGS)
    assert "\n" not in str(info.value)
    assert len(server.hits("/v1/chat/completions")) == 1


def test_401_hints_api_key_and_bearer_sent(server):
    server.default["/v1/chat/completions"] = lambda: (401, {"error": {"message": "invalid key"}}, {})
    with pytest.raises(EngineError, match="API key"):
        run(make_engine(server, api_key="sk-test"), messages=MSGS)
    (req,) = server.hits("/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test"


def test_api_key_from_env(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    eng = OpenAIHTTPEngine(server.url, model="m", max_model_len=10)
    run(eng, messages=MSGS)
    assert server.hits("/v1/chat/completions")[0].headers["authorization"] == "Bearer sk-env"


def test_unreachable_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    eng = OpenAIHTTPEngine(f"http://127.0.0.1:{port}/v1", model="m", max_model_len=10,
                           max_retries=1, backoff_s=0.01, api_key="")
    with pytest.raises(EngineError) as info:
        run(eng, messages=MSGS)
    msg = str(info.value)
    assert msg.startswith(f"cannot reach http://127.0.0.1:{port}/v1: connection refused")
    assert "after 2 attempts" in msg and "\n" not in msg


def test_model_discovery(server):
    eng = OpenAIHTTPEngine(server.url, api_key="", backoff_s=0.01)
    assert eng.model_name == ""
    res = run(eng, messages=MSGS)
    assert res.text == "hello"
    assert eng.model_name == "served-model" and eng.max_model_len == 32768
    assert server.hits("/v1/chat/completions")[0].body["model"] == "served-model"
    run(eng, messages=MSGS)  # discovered once, on a second event loop too
    assert len(server.hits("/v1/models")) == 1

    async def names():
        try:
            return await eng.list_models()
        finally:
            await eng.close()

    assert asyncio.run(names()) == ["served-model", "other"]


def test_max_model_len_lookup_is_best_effort(server):
    eng = OpenAIHTTPEngine(server.url, model="other", api_key="")
    run(eng, messages=MSGS)
    assert eng.max_model_len == 8192  # "other" reports no max_model_len
    server.default.pop("/v1/models")  # 404 from now on
    eng2 = OpenAIHTTPEngine(server.url, model="x", api_key="")
    assert run(eng2, prompt="p").text == "world"
    assert eng2.max_model_len == 8192


def test_client_reused_and_concurrent_calls(server):
    eng = make_engine(server)

    async def go():
        first = eng._get_client()
        results = await asyncio.gather(*(eng.generate(prompt=f"p{i}") for i in range(8)))
        assert eng._get_client() is first
        await eng.close()
        return results

    assert len(asyncio.run(go())) == 8
    assert len(asyncio.run(go())) == 8  # a second asyncio.run gets a fresh client
    assert len(server.hits("/v1/completions")) == 16


def test_survives_a_new_event_loop_without_close(server):
    eng = make_engine(server)
    assert asyncio.run(eng.generate(MSGS)).text == "hello"  # loop 1 ends, client left open
    assert asyncio.run(eng.generate(MSGS)).text == "hello"  # loop 2 must build a new client
    asyncio.run(eng.close())
    assert len(server.hits("/v1/chat/completions")) == 2
