"""The Serve app end to end: `longwriter serve` joining a Ray cluster it did not start, real vLLM (CPU).

One app serves every test in this module (starting engines is the slow part). The fixture
starts a Ray head (`ray start --head`, private ports and temp dir, no $LONGWRITER_API_KEY in
its environment), then `longwriter serve` with RAY_ADDRESS pointing at it and the key only in
the CLI's environment: every key test below proves the CLI hands the key to the app itself.
Its config is a Serve config file like serve/config.yaml, tuned so that autoscaling and
overload show within a minute on two cores: 1-2 replicas, target 2 ongoing requests, 4 ongoing
+ 4 queued at most; and small fail-closed limits: 2 documents in flight, 256 KiB bodies, one
CORS origin.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from core.text import count_words

KEY = "test-key-123"
MODEL = "SmolLM2-135M-Instruct"
AUTH = {"Authorization": f"Bearer {KEY}"}
ALLOWED_ORIGIN = "http://allowed.example"
MAX_BODY = 256 * 1024
DOCS_CAP = 2

pytestmark = pytest.mark.slow


def serve_config(port: int) -> dict:
    return {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "longwriter", "route_prefix": "/", "import_path": "serve.app:app_builder",
            "args": {
                "serve": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                          "max_ongoing_requests": 4, "max_queued_requests": 4, "retry_after_s": 3,
                          "upscale_delay_s": 2, "downscale_delay_s": 6, "metrics_interval_s": 1,
                          "cors_origins": [ALLOWED_ORIGIN], "max_body_bytes": MAX_BODY,
                          "max_documents_in_flight": DOCS_CAP},
                "engine": {"enforce_eager": True, "kv_cache_gib": 1, "max_num_seqs": 16},
            },
        }],
    }


@pytest.fixture(scope="module")
def app():
    from tests.serve_launcher import launched

    port = free_port()
    no_auth = {"RAY_AUTH_MODE": "disabled"}  # lets the test read replica counts from the dashboard API
    # The key only in the CLI's environment; the head (where every replica runs) never has it.
    with launched(serve_config(port), env={"LONGWRITER_API_KEY": KEY, **no_auth}, cluster_env=no_auth,
                  ready_timeout=480) as srv:
        assert "[API key required]" in srv["log"].read_text()
        yield {"base": srv["base_url"], "dashboard": srv["dashboard"], "log": srv["log"], "tmp": srv["tmp"]}


def llm_replicas(app) -> int:
    """RUNNING replicas of the LLMServer deployment, from Serve's REST API on the dashboard."""
    data = httpx.get(app["dashboard"] + "/api/serve/applications/", timeout=20).json()
    deps = data["applications"]["longwriter"]["deployments"]
    return sum(1 for name, d in deps.items() if name.startswith("LLMServer")
               for r in d["replicas"] if r["state"] == "RUNNING")


def sse_events(resp: httpx.Response) -> list[tuple[str, dict]]:
    events, event = [], None
    for line in resp.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            events.append((event, json.loads(line[5:])))
    return events


# ------------------------------------------------------------------ OpenAI-compatible API


def test_openai_client_models_chat_completions_streaming(app):
    from openai import OpenAI

    client = OpenAI(base_url=app["base"] + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
                                          max_tokens=12, temperature=0)
    assert chat.choices[0].message.content.strip() and chat.usage.completion_tokens <= 12
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to five."}],
                                            max_tokens=16, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 3 and "".join(pieces).strip()
    comp = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert comp.choices[0].text.strip() and comp.usage.prompt_tokens > 3


def test_api_key_required_except_health_readiness_and_playground(app):
    base = app["base"]
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/longwrite")):
        r = httpx.request(method, base + path, json={}, timeout=30)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert "API key" in r.json()["error"]["message"]
        r = httpx.request(method, base + path, json={}, timeout=30, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    # A preflight-looking OPTIONS is no way around the key (no CORS layer answers a foreign origin).
    r = httpx.options(base + "/v1/models", timeout=30, headers={"Origin": "http://evil.example"})
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
    assert httpx.get(base + "/health", timeout=30).json() == {"status": "ok"}
    page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 200 and MODEL in page.text and "v1/longwrite" in page.text
    assert httpx.get(base + "/ready", timeout=60).json() == {"ready": True, "model": MODEL}  # probes send no key


@pytest.mark.parametrize(("body", "field"), [
    ({"length": 300}, "instruction"),
    ({"instruction": "Write about rain.", "length": -3}, "length"),
    ({"instruction": "Write about rain.", "length": "many"}, "length"),
    ({"instruction": "   "}, "instruction"),
    ({"instruction": "Write about rain.", "temprature": 0.5}, "temprature"),
    ({"instruction": "Write about rain.", "mode": "poem"}, "mode"),
])
def test_bad_longwrite_body_is_400_naming_the_field(app, body, field):
    r = httpx.post(app["base"] + "/v1/longwrite", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert field in msg and "Traceback" not in r.text


def test_bad_chat_body_is_400_without_a_stack_trace(app):
    r = httpx.post(app["base"] + "/v1/chat/completions", json={"model": MODEL, "messages": "hello"},
                   headers=AUTH, timeout=30)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"] and "Traceback" not in r.text
    r = httpx.post(app["base"] + "/v1/longwrite", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"},
                   timeout=30)
    assert r.status_code == 400 and "Traceback" not in r.text


def test_cors_closed_to_foreign_origins_open_to_the_allow_list(app):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(app["base"] + "/v1/chat/completions", timeout=30, headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers and r.status_code >= 400
    r = httpx.get(app["base"] + "/v1/models", timeout=30, headers={**AUTH, "Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers
    r = httpx.options(app["base"] + "/v1/chat/completions", timeout=30, headers={**pre, "Origin": ALLOWED_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    r = httpx.get(app["base"] + "/v1/models", timeout=30, headers={**AUTH, "Origin": ALLOWED_ORIGIN})
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert httpx.get(app["base"] + "/v1/models", timeout=30, headers={"Origin": ALLOWED_ORIGIN}).status_code == 401


def test_body_over_the_limit_is_413(app):
    big = json.dumps({"instruction": "x" * (MAX_BODY + 10)}).encode()
    r = httpx.post(app["base"] + "/v1/longwrite", content=big, timeout=60,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    r = httpx.post(app["base"] + "/v1/chat/completions", content=chunks(), timeout=60,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == 413


def test_internal_error_is_one_generic_line(app):
    """A LoRA-style model id ("base:adapter") makes ray.serve.llm's handle load an adapter this
    app has no LoRA config for: the engine call raises inside the inherited chat route."""
    r = httpx.post(app["base"] + "/v1/chat/completions", headers=AUTH, timeout=120,
                   json={"model": f"{MODEL}:no-such-adapter", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["code"] == 500 and err["type"] == "internal_error"
    assert err["message"].startswith("internal server error") and "\n" not in err["message"]
    assert "exception" not in r.text.lower() and "Traceback" not in r.text and "lora" not in r.text.lower()


# ------------------------------------------------------------------ /v1/longwrite


def test_longwrite_streams_plan_then_sections_then_record(app):
    with httpx.stream("POST", app["base"] + "/v1/longwrite", headers=AUTH, timeout=600,
                      json={"instruction": "Write a 600-word essay about why cities plant trees.", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds[0] == "plan" and kinds[-1] == "done", kinds
    plan = events[0][1]
    assert plan["target_words"] == 600 and plan["target_source"] == "instruction"
    sections = [d for k, d in events if k == "section"]
    assert len(sections) >= 2 and len(sections) == len(plan["plan"])
    assert [s["index"] for s in sections] == list(range(len(sections)))
    doc = events[-1][1]["document"]
    assert doc["status"] == "ok" and doc["text"] == "\n\n".join(s["text"] for s in sections)
    assert doc["word_count"] == count_words(doc["text"])
    assert abs(doc["word_count"] - 600) <= 0.35 * 600, doc["word_count"]  # one sampled document
    assert events[-1][1]["usage"]["completion_tokens"] == doc["generated_tokens"] > 0
    assert doc["cached_tokens"] > 0  # later sections reuse the replica's prefix cache


def test_longwrite_without_stream_returns_the_record(app):
    r = httpx.post(app["base"] + "/v1/longwrite", headers=AUTH, timeout=600,
                   json={"instruction": "Write about snow.", "length": 120, "mode": "direct", "model": MODEL})
    assert r.status_code == 200, r.text
    doc = r.json()["document"]
    assert doc["mode"] == "direct" and doc["status"] == "ok" and doc["target_words"] == 120
    assert doc["target_source"] == "row" and doc["word_count"] > 20 and doc["model"] == MODEL
    r = httpx.post(app["base"] + "/v1/longwrite", headers=AUTH, timeout=60,
                   json={"instruction": "Write about snow.", "model": "gpt-9"})
    assert r.status_code == 404 and "gpt-9" in r.json()["error"]["message"]


def test_documents_past_the_in_flight_cap_get_429(app):
    """DOCS_CAP documents at once per ingress replica; the extra ones get 429 + Retry-After at once."""

    async def scenario() -> list[tuple[float, httpx.Response]]:
        async with httpx.AsyncClient(base_url=app["base"], headers=AUTH, timeout=600) as client:
            async def one() -> tuple[float, httpx.Response]:
                t0 = time.time()
                r = await client.post("/v1/longwrite", json={"instruction": "Write about harbours.",
                                                             "length": 300, "mode": "direct"})
                return time.time() - t0, r

            return await asyncio.gather(*[one() for _ in range(DOCS_CAP + 1)])

    results = asyncio.run(scenario())
    codes = sorted(r.status_code for _, r in results)
    assert codes == [200] * DOCS_CAP + [429], [(r.status_code, r.text[:200]) for _, r in results]
    (took, refused), = [(t, r) for t, r in results if r.status_code == 429]
    assert int(refused.headers["retry-after"]) == 3 and took < 20  # refused before any engine work
    assert refused.json()["error"]["type"] == "rate_limit_exceeded" and refused.json()["error"]["code"] == 429
    r = httpx.post(app["base"] + "/v1/longwrite", headers=AUTH, timeout=600,  # the slots came back
                   json={"instruction": "Write about snow.", "length": 60, "mode": "direct"})
    assert r.status_code == 200


def test_generation_job_client_against_the_app(app, run_on_engine):
    """The bulk job's OpenAI-compatible backend (what `generate --endpoint` uses) on Serve's replicas."""
    from core.agentwrite import AgentWriter
    from core.config import AgentWriteConfig, EngineConfig
    from core.engines import build_engine

    engine = build_engine(EngineConfig(endpoint=app["base"] + "/v1", api_key=KEY))
    doc = run_on_engine(AgentWriter(engine, AgentWriteConfig()).write("Write 300 words about wells.", doc_id="w"))
    run_on_engine(engine.close())
    assert doc.status == "ok", doc.error
    assert doc.model == MODEL and len(doc.plan) >= 1 and doc.word_count > 150


# ------------------------------------------------------------------ playground


def test_playground_in_headless_chromium(app):
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is missing: scripts/env.sh installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(app["base"] + "/")
        page.fill("#instruction", "Write a short essay about lighthouses.")
        page.fill("#length", "320")
        page.fill("#apikey", KEY)
        page.click("#go")
        page.wait_for_selector("#plan li", timeout=120_000)
        page.wait_for_selector("section.part", timeout=300_000)
        live = int(page.inner_text("#words"))
        assert live > 0  # the live count moves as sections arrive
        page.wait_for_selector("#final[data-words]", timeout=300_000)
        final = int(page.get_attribute("#final", "data-words"))
        assert page.inner_text("#status") == "done"
        assert page.locator("section.part").count() == page.locator("#plan li").count() >= 1
        assert final > 100 and f"final: {final} words" in page.inner_text("#final")
        browser.close()


# ------------------------------------------------------------------ autoscaling and overload


async def _chat(client: httpx.AsyncClient, max_tokens: int) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": max_tokens, "min_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Tell me a long story about a ship."}]})


def test_load_scales_out_sheds_overload_and_scales_back(app):
    """Bounded load on loopback: 1 -> 2 replicas, 503 + Retry-After past capacity, back to 1."""
    assert llm_replicas(app) == 1
    codes: list[int] = []

    async def scenario() -> dict:
        seen: dict = {}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=app["base"], headers=AUTH, timeout=300, limits=limits) as client:
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    codes.append((await _chat(client, 96)).status_code)

            workers = [asyncio.create_task(worker()) for _ in range(7)]  # within capacity: 4 + 4 queued
            t0 = time.time()
            while time.time() - t0 < 360:
                await asyncio.sleep(3)
                if await asyncio.to_thread(llm_replicas, app) == 2:
                    seen["scaled_out_s"] = time.time() - t0
                    break
            # Past capacity: 2 replicas x 4 ongoing + 4 queued at the caller; 40 at once is too many.
            burst = await asyncio.gather(*[_chat(client, 32) for _ in range(40)])
            seen["burst"] = burst
            stop.set()
            await asyncio.gather(*workers)
        t1 = time.time()
        while time.time() - t1 < 240:
            await asyncio.sleep(3)
            if await asyncio.to_thread(llm_replicas, app) == 1:
                seen["scaled_in_s"] = time.time() - t1
                break
        return seen

    seen = asyncio.run(scenario())
    assert "scaled_out_s" in seen, "never scaled to 2 replicas under load"
    assert codes and set(codes) <= {200, 503}, sorted(set(codes))
    burst = seen["burst"]
    shed = [r for r in burst if r.status_code == 503]
    assert shed and any(r.status_code == 200 for r in burst), [r.status_code for r in burst]
    assert all(r.status_code in (200, 503) for r in burst)
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert "backpressure" in shed[0].text.lower() and "Traceback" not in shed[0].text
    assert all("exception" not in r.text.lower() for r in shed)  # one generic line, no details
    assert "scaled_in_s" in seen, "did not scale back to 1 replica after the load"
    r = httpx.post(app["base"] + "/v1/chat/completions", headers=AUTH, timeout=120,
                   json={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200  # no replica crashed


def test_key_in_no_log_file(app):
    """The key went to the app by value: no Ray log (driver, controller, replicas) or CLI line has it."""
    assert KEY not in app["log"].read_text()
    assert list(app["tmp"].glob("session_*/logs/serve/replica_*LongWriteIngress*.log"))  # the logs are there
    hits = subprocess.run(["grep", "-rlaF", KEY, str(app["tmp"])], capture_output=True, text=True).stdout.split()
    assert not [h for h in hits if not h.endswith(".yaml")], hits


def test_repo_serve_config_builds_the_app():
    """serve/config.yaml (what `serve run` / `serve deploy` take) builds the app graph as is."""
    from ray.serve.deployment import Application

    from conftest import ROOT
    from ray_jobs.serve_cmd import app_args_from_file
    from serve.app import app_builder

    args, http = app_args_from_file(str(ROOT / "serve" / "config.yaml"))
    assert http["port"] == 8000
    assert isinstance(app_builder(args), Application)
    with pytest.raises(ValueError, match="unknown ServeConfig field"):
        app_builder({**args, "serve": {"max_replica": 3}})
    with pytest.raises(ValueError, match="min_replicas"):
        app_builder({**args, "serve": {"min_replicas": 3, "max_replicas": 2}})
