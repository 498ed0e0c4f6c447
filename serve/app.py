"""The Serve application: ``serve run serve/config.yaml`` or ``longwriter serve``.

Graph: ``LongWriteIngress`` (HTTP: OpenAI routes, /v1/longwrite, /health, /ready, /) ->
``LLMServer`` (ray.serve.llm: one vLLM engine per replica, autoscaled on ongoing requests).
``app_builder(args)`` takes the same sections as the CLI's YAML: ``serve`` (ServeConfig),
``engine`` (EngineConfig), ``agentwrite`` (AgentWriteConfig).

The API key is resolved where the app is built (:func:`resolve_api_key`: ``serve.api_key``,
else the variable ``serve.api_key_env`` names) and handed to the ingress by value; with
``serve run`` / ``serve deploy`` that is the build task Serve starts on the cluster (any node,
so the variable must be set on the nodes, e.g. from a required k8s Secret), with
``longwriter serve`` it is the CLI process. Building refuses an app that would listen beyond
loopback without a key unless ``serve.insecure_no_key`` is set.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from core.config import AgentWriteConfig, EngineConfig, ServeConfig, update_config

SECTIONS = {"serve": ServeConfig, "engine": EngineConfig, "agentwrite": AgentWriteConfig}


def configs_from_args(args: dict[str, Any] | None) -> tuple[ServeConfig, EngineConfig, AgentWriteConfig]:
    """Config objects from builder args; unknown sections or fields are a one-line error."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown app arg section(s): {', '.join(unknown)} (expected: {', '.join(SECTIONS)})")
    out = []
    for name, cls in SECTIONS.items():
        values = args.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"app arg section '{name}' must be a mapping, got {type(values).__name__}")
        out.append(update_config(cls(), values))
    return out[0], out[1], out[2]


def resolve_api_key(cfg: ServeConfig) -> str | None:
    """``cfg.api_key``, else the environment variable ``cfg.api_key_env`` names (here), else None."""
    if cfg.api_key:
        return cfg.api_key
    return (os.environ.get(cfg.api_key_env) or None) if cfg.api_key_env else None


def serve_http_host() -> str:
    """The host the Serve proxies listen on: the running Serve instance's, else Serve's default
    (127.0.0.1, which ``serve.run`` starts with when no Serve is running)."""
    try:
        import ray

        if ray.is_initialized():
            from ray.serve.context import _get_global_client

            client = _get_global_client(raise_if_no_controller_running=False)
            if client is not None:
                return str(client.http_config.host)
    except Exception:  # noqa: BLE001 - no Serve instance to ask: Serve's default applies
        pass
    from ray.serve.config import HTTPOptions

    return str(HTTPOptions().host)


def resolve_device(cfg: ServeConfig) -> str:
    """cpu or gpu replicas: as configured, else what the connected Ray cluster has."""
    from core.engines.vllm_args import resolve_device as resolve

    gpus = None
    if cfg.device == "auto":
        try:
            import ray

            if ray.is_initialized():
                gpus = ray.cluster_resources().get("GPU", 0)
        except Exception:  # noqa: BLE001 - fall back to this machine
            pass
    return resolve(cfg.device, gpus)


def build_llm_config(scfg: ServeConfig, ecfg: EngineConfig, model_path: str, model_id: str, device: str) -> Any:
    """A ray.serve.llm ``LLMConfig``: engine args, autoscaling, overload limits, CPU or GPU."""
    from ray.serve.llm import LLMConfig

    if scfg.min_replicas < 1 or scfg.max_replicas < scfg.min_replicas:
        raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {scfg.min_replicas} and {scfg.max_replicas}")
    from core.engines.vllm_args import cpu_env, engine_kwargs as vllm_kwargs

    # usage reports cached prompt tokens
    engine_kwargs: dict[str, Any] = dict(vllm_kwargs(ecfg, device), enable_prompt_tokens_details=True)
    overload = {"status_code": 503, "retry_after_s": scfg.retry_after_s}
    deployment: dict[str, Any] = dict(
        autoscaling_config=dict(
            min_replicas=scfg.min_replicas, initial_replicas=scfg.min_replicas, max_replicas=scfg.max_replicas,
            target_ongoing_requests=scfg.target_ongoing_requests, upscale_delay_s=scfg.upscale_delay_s,
            downscale_delay_s=scfg.downscale_delay_s, metrics_interval_s=scfg.metrics_interval_s,
            look_back_period_s=max(2 * scfg.metrics_interval_s, min(30.0, scfg.upscale_delay_s + scfg.metrics_interval_s)),
        ),
        max_ongoing_requests=scfg.max_ongoing_requests,
        max_queued_requests=scfg.max_queued_requests,
        backpressure_config=overload,
    )
    extra: dict[str, Any] = {}
    if device == "cpu":
        # vLLM binds its own OpenMP threads; a Ray CPU per replica would starve the ingress.
        deployment["ray_actor_options"] = {"num_cpus": scfg.replica_num_cpus or 0}
        extra = {"accelerator_config": {"kind": "cpu"}, "runtime_env": {"env_vars": cpu_env(ecfg)}}
    else:
        if scfg.replica_num_cpus is not None:
            deployment["ray_actor_options"] = {"num_cpus": scfg.replica_num_cpus}
    return LLMConfig(model_loading_config={"model_id": model_id, "model_source": model_path},
                     engine_kwargs=engine_kwargs, deployment_config=deployment, **extra)


def app_builder(args: dict[str, Any] | None = None) -> Any:
    """Serve app builder (``import_path: serve.app:app_builder``)."""
    from ray import serve
    from ray.serve.llm import build_llm_deployment
    from ray.serve.llm.ingress import make_fastapi_ingress

    from core.models import EMBEDDED_NAME, resolve_model
    from serve.ingress import LongWriteIngress, endpoint_map, fastapi_app
    from ray_jobs.ray_private import model_card
    from serve.middleware import Secret, listen_refusal

    scfg, ecfg, acfg = configs_from_args(args)
    api_key = resolve_api_key(scfg)
    refusal = listen_refusal(serve_http_host(), api_key, scfg.insecure_no_key, scfg.api_key_env)
    if refusal:
        raise ValueError(refusal)
    # The key goes to the ingress as its own (masked) argument; no config object carries it.
    scfg = dataclasses.replace(scfg, api_key=None, api_key_env=None)
    if ecfg.endpoint:
        raise ValueError("engine.endpoint is for clients; the Serve app hosts its own vLLM replicas")
    device = resolve_device(scfg)
    model_path = resolve_model(ecfg.model)
    embedded = ecfg.model in (None, "", "embedded", EMBEDDED_NAME)
    model_id = scfg.model_id or (EMBEDDED_NAME if embedded else ecfg.model)
    llm_config = build_llm_config(scfg, ecfg, model_path, model_id, device)
    server = build_llm_deployment(llm_config)
    ingress_options = LongWriteIngress.get_deployment_options([llm_config])
    ingress_options.update(max_queued_requests=scfg.max_queued_requests,
                           backpressure_config={"status_code": 503, "retry_after_s": scfg.retry_after_s})
    if device == "cpu":  # async I/O and tokenizing only; leave the cores to the engine replicas
        ingress_options["ray_actor_options"] = {**ingress_options.get("ray_actor_options", {}), "num_cpus": 0}
    ingress_cls = make_fastapi_ingress(LongWriteIngress, endpoint_map=endpoint_map(), app=fastapi_app(scfg))
    return serve.deployment(ingress_cls, name="LongWriteIngress").options(**ingress_options).bind(
        llm_deployments={model_id: server},
        model_cards={model_id: model_card(model_id, llm_config)},
        serve_cfg=scfg, agentwrite_cfg=acfg, tokenizer_path=model_path,
        max_model_len=ecfg.max_model_len, device=device, api_key=Secret(api_key),
    )
