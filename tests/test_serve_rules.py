"""The Serve app's fail-closed rules without an engine: fast (seconds), no Ray started.

The middleware runs in the app's real FastAPI stack (serve.ingress.fastapi_app: ray.serve.llm's
app with our layers) through httpx's ASGITransport, with a few extra routes that fail on
purpose. That is how the generic 5xx body is shown for an exception escaping a handler:
the live app's routes catch their own failures (ray.serve.llm's handler, AgentWrite's records),
so no request to them can make one escape; test_serve.py shows the live 5xx paths it can
reach (an overloaded replica's 503).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException, Request

from conftest import ROOT
from core.config import ServeConfig
from serve import middleware
from serve.middleware import Secret, is_loopback, listen_refusal
from serve.protocol import LongWriteRequest

KEY = "rules-key-4567"
AUTH = {"Authorization": f"Bearer {KEY}"}
LEAK = "sk-leakedleakedleaked and /srv/secret/path.py line 12"


def make_app(**cfg):
    from serve.ingress import fastapi_app

    app = fastapi_app(ServeConfig(**cfg))

    @app.post("/v1/echo")
    async def echo(body: dict) -> dict:
        return {"n": len(json.dumps(body))}

    @app.get("/v1/boom")
    async def boom() -> dict:
        raise RuntimeError(f"engine handle raised: {LEAK}")

    @app.get("/v1/busy")
    async def busy() -> dict:
        raise HTTPException(503, f"replica queue full: {LEAK}")

    return app


@pytest.fixture
def client():
    clients = []

    def make(key: str | None = KEY, **cfg) -> httpx.AsyncClient:
        middleware.configure(Secret(key), 3)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(**cfg)), base_url="http://testserver")
        clients.append(c)
        return c

    yield make
    middleware.configure(None, 5)


def run(coro):
    import asyncio

    return asyncio.run(coro)


# ------------------------------------------------------------------ listening rule


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("myhost", False), ("", False)])
def test_loopback(host, loop):
    assert is_loopback(host) is loop


def test_listen_refusal():
    assert listen_refusal("127.0.0.1", None, False) is None
    assert listen_refusal("0.0.0.0", "k" * 8, False) is None
    assert listen_refusal("0.0.0.0", None, True) is None
    msg = listen_refusal("0.0.0.0", None, False)
    assert "refusing" in msg and "--insecure-no-key" in msg and "LONGWRITER_API_KEY" in msg


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    child = {k: v for k, v in os.environ.items() if k not in ("LONGWRITER_API_KEY", "RAY_ADDRESS")}
    child.update(env, RAY_TMPDIR=str(tmp_path / "ray"))
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", "serve", *args], cwd=ROOT, env=child,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_all_interfaces_without_a_key_before_ray_starts(tmp_path):
    t0 = time.time()
    r = _cli(["--host", "0.0.0.0", "--port", "18777"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in out, out[-2000:]
    assert "--insecure-no-key" in out and "Traceback" not in out
    assert not (tmp_path / "ray").exists(), "Ray was started before the check"
    # The same from a config file's http_options, and a key named by api_key_env that is unset.
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(json.dumps({"http_options": {"host": "0.0.0.0", "port": 18778}, "applications": [
        {"name": "longwriter", "route_prefix": "/", "import_path": "serve.app:app_builder",
         "args": {"serve": {"api_key_env": "LW_RULES_UNSET_KEY"}}}]}))
    r = _cli(["--config", str(cfg)], tmp_path)
    assert r.returncode == 2 and "refusing to serve on 0.0.0.0" in r.stdout + r.stderr
    assert "$LW_RULES_UNSET_KEY" in r.stdout + r.stderr
    assert not (tmp_path / "ray").exists()
    assert time.time() - t0 < 90


def test_app_builder_refuses_and_hands_the_key_by_value(monkeypatch):
    """Where serve run / serve deploy build the app: the Serve host decides, the key goes by value."""
    from serve import app as serve_app

    monkeypatch.setattr(serve_app, "serve_http_host", lambda: "0.0.0.0")
    monkeypatch.delenv("LW_RULES_KEY", raising=False)
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0"):
        serve_app.app_builder({"serve": {"api_key_env": "LW_RULES_KEY"}})
    monkeypatch.setenv("LW_RULES_KEY", KEY)
    built = serve_app.app_builder({"serve": {"api_key_env": "LW_RULES_KEY"}})
    kwargs = built._bound_deployment.init_kwargs
    assert isinstance(kwargs["api_key"], Secret) and kwargs["api_key"].value == KEY
    assert kwargs["serve_cfg"].api_key is None and kwargs["serve_cfg"].api_key_env is None
    assert KEY not in repr(kwargs) and KEY not in repr(ServeConfig(api_key=KEY))
    assert serve_app.app_builder({"serve": {"insecure_no_key": True, "api_key_env": None}})


# ------------------------------------------------------------------ middleware in the real stack


def test_key_is_required_for_every_method_but_open_paths(client):
    async def go():
        c = client()
        assert (await c.get("/v1/models")).status_code == 401
        r = await c.options("/v1/chat/completions", headers={"Origin": "https://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
        assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
        r = await c.post("/v1/echo", json={"a": 1}, headers={"Authorization": f"Bearer {KEY}x"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert (await c.post("/v1/echo", json={"a": 1}, headers=AUTH)).json() == {"n": 8}

    run(go())


def test_cors_closed_by_default_and_open_only_to_the_allow_list(client):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}

    async def go():
        c = client()  # ray.serve.llm's own app would answer any origin, with credentials
        r = await c.post("/v1/echo", json={}, headers={**AUTH, "Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
        c = client(cors_origins=["https://app.example"])
        r = await c.options("/v1/longwrite", headers={**pre, "Origin": "https://app.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await c.options("/v1/longwrite", headers={**pre, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers and r.status_code >= 400
        r = await c.options("/v1/longwrite")  # not a preflight: the key applies
        assert r.status_code == 401
        r = await c.post("/v1/echo", json={}, headers={**AUTH, "Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = await c.post("/v1/echo", json={}, headers={"Origin": "https://app.example"})
        assert r.status_code == 401  # the allowed origin still needs the key

    run(go())


def test_body_over_the_limit_is_413_by_length_and_by_counting(client):
    async def chunks(n: int, size: int):
        for _ in range(n):
            yield b" " * size

    async def go():
        c = client(max_body_bytes=1000)
        ok = await c.post("/v1/echo", json={"x": "a" * 900}, headers=AUTH)
        assert ok.status_code == 200
        r = await c.post("/v1/echo", json={"x": "a" * 2000}, headers=AUTH)
        assert r.status_code == 413 and r.json()["error"] == {
            "message": "request body over 1000 bytes", "type": "request_too_large", "code": 413}
        # No Content-Length (chunked): counted as it streams.
        r = await c.post("/v1/echo", content=chunks(10, 300), headers={**AUTH, "Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"]["code"] == 413
        r = await c.post("/v1/echo", content=b"x" * 5000)  # no key either: still refused unread
        assert r.status_code in (401, 413)

    run(go())


def test_every_5xx_body_is_one_generic_line(client):
    async def go():
        c = client()
        r = await c.get("/v1/boom", headers={**AUTH, "x-request-id": "req-123"})
        assert r.status_code == 500
        assert r.json() == {"error": {"message": "internal server error (request id req-123)",
                                      "type": "internal_error", "code": 500}}
        r = await c.get("/v1/busy", headers=AUTH)
        assert r.status_code == 503 and int(r.headers["retry-after"]) == 3
        err = r.json()["error"]
        assert err["code"] == 503 and err["type"] == "overloaded" and "\n" not in err["message"]
        for resp in (r,):
            assert "sk-" not in resp.text and "secret" not in resp.text and "queue full" not in resp.text

    run(go())


def test_stream_error_events_hide_5xx_details():
    from serve.ingress import _error_event

    class Overloaded(Exception):
        status_code = 503

    class Bad(Exception):
        status_code = 422

    for e, code in ((RuntimeError(LEAK), 500), (Overloaded(LEAK), 503)):
        event = _error_event(e)
        data = json.loads(event.split("data: ", 1)[1])
        assert data["code"] == code and "sk-" not in event and "/srv/" not in event
    data = json.loads(_error_event(Bad(f"length too large; key {LEAK}")).split("data: ", 1)[1])
    assert data["code"] == 422 and "length too large" in data["message"] and "sk-leaked" not in data["message"]


def test_secret_never_prints():
    s = Secret(KEY)
    assert KEY not in repr(s) and KEY not in str(s) and KEY not in f"{s!r} {s}" and s.value == KEY
    assert not Secret("") and not Secret(None)


def test_longwrite_engine_failure_is_a_generic_503(client):
    """/v1/longwrite's own 5xx paths (non-streaming body and stream event) when every engine call
    fails. The live app cannot be made to fail this way on request (its model calls go to healthy
    replicas), so the handler runs here on the real stack with a real engine whose server is
    gone: OpenAIHTTPEngine on a closed port, its URL carrying credentials that must not leak."""
    from conftest import free_port
    from core.config import AgentWriteConfig
    from core.engines.openai_http import OpenAIHTTPEngine
    from serve.ingress import LongWriteIngress, endpoint_map

    url = f"http://user:pw-{KEY}@127.0.0.1:{free_port()}/v1"
    ing = object.__new__(LongWriteIngress)  # only what longwrite() uses: no Serve handles here
    ing._model_id, ing._scfg, ing._acfg, ing._in_flight = "m", ServeConfig(), AgentWriteConfig(), 0
    ing._engine = OpenAIHTTPEngine(url, model="m", max_model_len=8192, max_retries=0)

    async def go():
        c = client()
        app = c._transport.app

        async def longwrite(body: LongWriteRequest, request: Request):
            return await LongWriteIngress.longwrite(ing, body, request)

        endpoint_map()["longwrite"](app)(longwrite)
        body = {"instruction": "Write about wells.", "length": 200, "mode": "direct"}
        r = await c.post("/v1/longwrite", json=body, headers=AUTH)
        assert r.status_code == 503 and int(r.headers["retry-after"]) == 3, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "code"} and (err["type"], err["code"]) == ("overloaded", 503)
        assert err["message"].startswith(middleware.GENERIC_5XX[503][0] + " (request id ")
        r = await c.post("/v1/longwrite", json={**body, "stream": True}, headers=AUTH)
        assert r.status_code == 200 and "event: error" in r.text and '"code": 503' in r.text
        for text in (r.text,):
            assert "127.0.0.1" not in text and KEY not in text and "pw-" not in text and "connect" not in text.lower()
        assert ing._in_flight == 0  # both documents gave their slot back
        await ing._engine.close()

    run(go())
