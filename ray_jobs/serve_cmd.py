"""`longwriter serve`: run the Serve app (OpenAI API, /v1/longwrite, playground) until Ctrl-C.

    longwriter serve                                  # embedded model on this machine, port 8000
    longwriter serve --model Qwen/Qwen2.5-7B-Instruct --port 8080 --max-replicas 4
    longwriter serve --config serve/config.yaml       # the same file `serve run` / `serve deploy` take

Flags override the config file's ``args`` (and its ``http_options`` host/port). Connects to
the Ray cluster in $RAY_ADDRESS when set, else starts a local one.

Fails closed:
  API key   resolved here, where this command runs: --api-key, else $LONGWRITER_API_KEY (or the
            variable serve.api_key_env names), and handed to the app by value, also on a
            cluster in $RAY_ADDRESS whose nodes lack the variable. Clients send
            'Authorization: Bearer KEY' on every route but /health, /ready and the playground.
            Listening beyond loopback (--host 0.0.0.0) without a key is refused before Ray
            starts, unless --insecure-no-key.
  CORS      closed: no Access-Control-Allow-Origin for any origin unless --cors-origin lists it.
  limits    bodies over --max-body-bytes get 413; more than --max-documents-in-flight documents
            per ingress replica on /v1/longwrite get 429 + Retry-After.
  errors    every 5xx answer is one generic line; details go to the server log, redacted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import time
from typing import Any

from core.config import AgentWriteConfig, EngineConfig, ServeConfig
from core.redact import redact
from ray_jobs import console


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_config_flags

    p = sub.add_parser("serve", help="serve the model: OpenAI-compatible API, /v1/longwrite, playground at /",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="Serve config YAML (serve/config.yaml format: applications[0].args has serve/engine/agentwrite)")
    p.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard port when a local Ray is started")
    p.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for the first replica")
    add_config_flags(p, ServeConfig, skip=("cors_origins",))
    p.add_argument("--cors-origin", dest="cors_origins", action="append", default=None, metavar="ORIGIN",
                   help="an origin browsers may call the API from, e.g. https://app.example.com; repeat for more "
                        "(replaces serve.cors_origins of --config; default: none, CORS closed)")
    add_config_flags(p, EngineConfig, skip=("endpoint", "api_key"))
    add_config_flags(p, AgentWriteConfig)
    p.set_defaults(func=run)


def app_args_from_file(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(application args, http_options) of a Serve config file; ({}, {}) without one."""
    if not path:
        return {}, {}
    from ray_jobs.cli import load_yaml

    data = load_yaml(path)
    apps = data.get("applications") or []
    if len(apps) != 1 or not isinstance(apps[0], dict):
        raise ValueError(f"{path}: expected exactly one entry under 'applications'")
    if apps[0].get("import_path") != "serve.app:app_builder":
        raise ValueError(f"{path}: import_path must be serve.app:app_builder, not {apps[0].get('import_path')!r}")
    return dict(apps[0].get("args") or {}), dict(data.get("http_options") or {})


def run(args: argparse.Namespace) -> int:
    import logging

    from ray_jobs.cli import build_config
    from serve.app import SECTIONS, app_builder, configs_from_args, resolve_api_key
    from serve.middleware import is_loopback, listen_refusal

    file_args, http = app_args_from_file(args.config)
    configs_from_args(file_args)  # a bad file fails here, with its own message
    for key in ("host", "port"):
        if key in http and getattr(args, key) is None:
            setattr(args, key, http[key])
    configs = {name: build_config(cls, args, file_args.get(name)) for name, cls in SECTIONS.items()}
    # --api-key is the app's key (ServeConfig); the engine's own api_key is for --endpoint clients.
    configs["engine"] = dataclasses.replace(configs["engine"], api_key=None)
    scfg = configs["serve"]
    if not 0 < scfg.port < 65536:
        raise ValueError(f"--port must be 1..65535, got {scfg.port}")
    # The key is resolved here, not on the cluster, and goes to the app by value (api_key_env
    # cleared, so nothing reads another environment); the check comes before Ray starts.
    api_key = resolve_api_key(scfg)
    refusal = listen_refusal(scfg.host, api_key, scfg.insecure_no_key, scfg.api_key_env)
    if refusal:
        raise ValueError(refusal)
    configs["serve"] = dataclasses.replace(scfg, api_key=api_key, api_key_env=None)
    merged = {name: dataclasses.asdict(cfg) for name, cfg in configs.items()}
    secrets = (api_key,) if api_key else ()
    if not api_key and not is_loopback(scfg.host):
        print(f"[serve] WARNING: no API key (--insecure-no-key): anyone who can reach {scfg.host}:{scfg.port} "
              "can use the API", file=console.stream(), flush=True)

    import httpx
    import ray
    from ray import serve

    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address, log_to_driver=console.worker_logs_to_driver(), **({} if address else {"dashboard_port": args.dashboard_port}),
             runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}})
    serve.start(http_options={"host": scfg.host, "port": scfg.port})
    app = app_builder(merged)
    model = merged.get("engine", {}).get("model") or "the embedded model"
    print(redact(f"[serve] deploying {model} ({scfg.min_replicas}-{scfg.max_replicas} replicas); "
                 "engines take a minute or two to start ...", secrets), file=console.stream())
    serve.run(app, name="longwriter", route_prefix="/", blocking=False)
    host = "127.0.0.1" if scfg.host in ("0.0.0.0", "::") else scfg.host
    url = f"http://{host}:{scfg.port}"
    logging.getLogger("httpx").setLevel(logging.WARNING)
    deadline = time.time() + args.ready_timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=35).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(2)
    else:
        raise RuntimeError(f"the app did not become ready within {args.ready_timeout:.0f} s (see `serve status`)")
    print(f"[serve] ready: {url}/  (playground)  {url}/v1  (OpenAI API)  {url}/v1/longwrite  (long form)"
          + ("  [API key required]" if api_key else "  [no API key: loopback only]" if is_loopback(scfg.host)
             else "  [NO API KEY]"), file=console.stream(), flush=True)
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("[serve] shutting down", file=console.stream())
    serve.shutdown()
    ray.shutdown()
    return 0
