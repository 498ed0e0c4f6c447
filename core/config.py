"""Configuration dataclasses, one per job (trl-style): each field's default is documented in
its ``help`` metadata, which the CLI turns into ``--flag`` help text and YAML files override.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A documented field. ``ge``/``gt``/``le`` bound a number (numbers default to ``ge=0``;
    ``ge=None`` lifts it) and ``choices`` lists the allowed strings; :func:`check_config` holds
    every config to them, whether the value came from a default, a YAML file or a flag."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def longwriter_home() -> Path:
    """Cache root for converted models and compile caches (``$LONGWRITER_HOME``)."""
    return Path(os.environ.get("LONGWRITER_HOME", Path.home() / ".cache" / "longwriter")).expanduser()


@dataclass
class EngineConfig:
    """How to build one generation engine (an in-process vLLM, or an OpenAI-compatible URL)."""

    model: str | None = _f(None, "HF model directory or hub id; default: the embedded SmolLM2-135M-Instruct")
    endpoint: str | None = _f(None, "OpenAI-compatible base URL (e.g. http://host:8000/v1) instead of a local vLLM engine")
    api_key: str | None = _f(None, "API key for --endpoint (default: $OPENAI_API_KEY)")
    max_model_len: int = _f(8192, "context window in tokens (prompt + output)", ge=256)
    dtype: str = _f("bfloat16", "weights dtype for vLLM")
    tensor_parallel_size: int = _f(1, "GPUs per engine (tensor parallel)", ge=1)
    gpu_memory_utilization: float = _f(0.9, "vLLM GPU memory share (GPU only)", gt=0, le=1)
    kv_cache_gib: float = _f(2.0, "KV cache size on CPU in GiB (VLLM_CPU_KVCACHE_SPACE)", gt=0)
    enforce_eager: bool = _f(False, "skip graph compilation. Only the first start with given settings on a machine "
                                    "compiles (~100 s on 2 CPU cores); later ones load vLLM's cache and start as "
                                    "fast as eager ones, which decode ~20% slower: so compiled is the default "
                                    "for every command")
    structured_backend: str = _f("guidance", "vLLM structured-output backend for JSON plans (guidance|outlines|xgrammar)", choices=("guidance", "outlines", "xgrammar"))
    cpu_threads_bind: str | None = _f(None, "CPU only: cores for vLLM's OpenMP threads, e.g. 0-1 (default: all this process may use)")
    max_num_seqs: int = _f(64, "most sequences vLLM batches at once", ge=1)


@dataclass
class AgentWriteConfig:
    """Knobs of the plan -> write state machine (core.agentwrite)."""

    default_length: int = _f(1500, "target words when neither the row nor the instruction gives one", ge=1)
    max_length: int = _f(50000, "largest target accepted; larger requests are rejected as absurd", ge=1)
    words_per_section: int = _f(450, "preferred section size; the plan gets target/this sections", ge=1)
    min_section_words: int = _f(150, "smallest section budget after reconciliation (one-section notes excepted)", ge=1)
    max_section_words: int = _f(700, "largest section budget; bigger plan entries are split", ge=1)
    max_sections: int = _f(30, "upper bound on plan length", ge=1)
    plan_retries: int = _f(3, "extra plan attempts when the plan is not valid JSON or unusable")
    plan_fallback: bool = _f(True, "after the retries, write with an even generic plan instead of failing the document")
    temperature: float = _f(0.7, "sampling temperature for section text", le=5)
    top_p: float = _f(0.95, "nucleus sampling", gt=0, le=1)
    plan_temperature: float = _f(0.5, "sampling temperature for the plan", le=5)
    min_budget_share: float = _f(0.9, "min_tokens asks for this share of each section's budget", gt=0)
    max_budget_share: float = _f(1.35, "max_tokens allows this share of each section's budget", gt=0)
    trim_over: float = _f(0.1, "a section over its budget by more than this share is cut back at the last sentence end "
                               "within it (recorded as a call-stats note); 0 = never cut", ge=0)
    continue_below: float = _f(0.7, "a section under this share of its budget gets a continuation call", le=1)
    max_continuations: int = _f(1, "continuation calls per section")
    resample_tries: int = _f(1, "extra samples for a section answer that loops or that clean-up leaves under continue_below of its budget")
    resample_repetition_penalty: float = _f(1.15, "repetition penalty for those extra samples (1 = none)", gt=0)
    stop_loops: bool = _f(True, "in-process vLLM: stop an answer that may still be resampled as soon as it loops (over 30% "
                                "repeated word 4-grams from 60 words on) instead of running it to max_tokens")
    direct_max_share: float = _f(2.0, "direct mode: max_tokens allows this share of the target (capped by the context)", gt=0)
    context_margin: int = _f(64, "tokens kept free in the context window")
    seed: int | None = _f(None, "base sampling seed (per document and step it is offset); None = random", ge=None)

    def check(self) -> None:
        if self.min_section_words > self.max_section_words:
            raise ValueError(f"min_section_words {self.min_section_words} is above max_section_words {self.max_section_words}")
        if self.min_budget_share > self.max_budget_share:
            raise ValueError(f"min_budget_share {self.min_budget_share} is above max_budget_share {self.max_budget_share}")


def config_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def update_config(cfg: Any, values: dict[str, Any]) -> Any:
    """Return a checked copy of ``cfg`` with known keys from ``values`` (e.g. YAML) replaced."""
    names = {f.name for f in config_fields(type(cfg))}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {type(cfg).__name__} field(s): {', '.join(unknown)}")
    return check_config(dataclasses.replace(cfg, **values))


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_config(cfg: Any) -> Any:
    """Type and range of every field (see :func:`_f`), then the config's own ``check()``;
    a ValueError names the field as YAML and as a flag spell it. Returns ``cfg``."""
    for f in config_fields(type(cfg)):
        value, meta = getattr(cfg, f.name), f.metadata
        name = f"{f.name} (--{f.name.replace('_', '-')})"
        kind, _, rest = str(f.type).partition(" | ")
        if value is None:
            if "None" in rest or kind == "None":
                continue
            raise ValueError(f"{name} must be set")
        if kind not in _TYPES:
            continue
        if not isinstance(value, _TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            raise ValueError(f"{name} must be {'a' if kind != 'int' else 'an'} {kind}, got {value!r}")
        if kind in ("int", "float"):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            ge = meta.get("ge", 0 if "gt" not in meta else None)
            if ge is not None and value < ge:
                raise ValueError(f"{name} must be >= {ge}, got {value!r}")
            if "gt" in meta and value <= meta["gt"]:
                raise ValueError(f"{name} must be > {meta['gt']}, got {value!r}")
            if "le" in meta and value > meta["le"]:
                raise ValueError(f"{name} must be <= {meta['le']}, got {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
    own = getattr(cfg, "check", None)
    if callable(own):
        own()
    return cfg


@dataclass
class StorageConfig:
    """Where URIs point: local paths or ``s3://`` (standard AWS credential chain by default)."""

    s3_endpoint: str | None = _f(None, "S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL or AWS)")
    s3_region: str | None = _f(None, "S3 region (default: $AWS_REGION / $AWS_DEFAULT_REGION, else us-east-1)")
    s3_access_key: str | None = _f(None, "access key (default: the AWS credential chain)")
    s3_secret_key: str | None = _f(None, "secret key (default: the AWS credential chain)")


@dataclass
class GenerateConfig:
    """The bulk generation job (ray_jobs.generate): prompts in, partitioned Parquet out."""

    input: str = _f("", "prompts: JSONL or Parquet file or folder, local or s3:// (fields: prompt; optional id, length, anything else)")
    output: str = _f("", "output dataset root, local or s3://; documents land under run_id=RUN/")
    mode: str = _f("agentwrite", "agentwrite (plan, then sections) or direct (one call per prompt)", choices=("agentwrite", "direct"))
    run_id: str | None = _f(None, "partition name; default: derived from mode and model or endpoint (not the input path) so reruns continue the run")
    engines: int = _f(1, "engine actors (each owns one vLLM engine, or one HTTP client with --endpoint)", ge=1)
    in_flight: int = _f(32, "documents in flight per engine", ge=1)
    rows_per_file: int = _f(16, "documents per Parquet file, at most (also the Ray Data batch size)", ge=1)
    flush_interval_s: float = _f(60.0, "a finished document waits at most this long for others to share its "
                                       "file, so slow siblings never keep it out of the output", gt=0)
    engine_num_cpus: float = _f(1.0, "Ray CPUs reserved per engine actor")
    engine_num_gpus: float | None = _f(None, "Ray GPUs per engine actor (default: tensor_parallel_size when a GPU exists, else 0)")
    limit: int | None = _f(None, "only the first N valid prompts", ge=1)
    doc_retries: int = _f(2, "extra attempts for a document whose engine calls failed")
    shared_output: bool = _f(False, "a local --output is a folder every node of a multi-machine cluster mounts "
                                    "(NFS, Lustre); without it such an output is refused")
    table: str | None = _f(None, "also commit each finished run to this Apache Iceberg table, NAMESPACE.NAME "
                                 "(rows keyed on run_id and id; needs --catalog)")
    catalog: str | None = _f(None, "the table's catalog: sqlite:///PATH.db (local), an http(s):// REST catalog, or glue")
    warehouse: str | None = _f(None, "where a new table's files go, a folder or s3:// prefix (required with a SQLite catalog)")
    lock_ttl_s: float = _f(120.0, "a run's writer renews its _LOCK lease every quarter of this; a lease older than "
                                  "this belongs to a dead job and is taken over", ge=1)



@dataclass
class EvalConfig:
    """The LongBench-Write evaluation job (ray_jobs.evaluate): generate, judge, score, report."""

    bench: str = _f("", "benchmark JSONL, local or s3:// (fields: prompt, length; optional type)")
    output: str = _f("", "evaluation folder, local or s3://: generations/, results.parquet, report.md, lengths.png, summary.json")
    mode: str = _f("agentwrite", "generation mode: agentwrite (plan, then sections) or direct (one call)")
    generations: str | None = _f(None, "score these existing generations (a generate output root or one run_id=... folder) instead of generating")
    judge_model: str | None = _f(None, "judge model (HF directory or hub id); default: the generation model")
    judge_endpoint: str | None = _f(None, "OpenAI-compatible URL of the judge (use this on a cluster); default: --endpoint when judging with the generation model, else an in-process vLLM engine")
    limit: int | None = _f(None, "only the first N benchmark prompts")
    run_id: str | None = _f(None, "generation run id; default: derived from the benchmark, mode and model (reruns resume)")
    engines: int = _f(1, "generation engine actors")
    in_flight: int = _f(32, "documents in flight per generation engine")
    judge_in_flight: int = _f(32, "judge requests in flight at once")
    judge_retries: int = _f(2, "extra judge attempts for an invalid or cut-off answer before the judgment is dropped")

@dataclass
class ServeConfig:
    """The Ray Serve app (serve.app): vLLM replicas, OpenAI-compatible API, /v1/longwrite.

    Autoscaling counts ongoing requests per replica. A long document keeps one request open
    for minutes, so ``target_ongoing_requests`` must be a real number (Ray's LLM default is
    effectively infinite and never scales), and ``max_queued_requests`` bounds the wait so
    overload is answered with 503 + Retry-After instead of an ever-growing queue.
    """

    model_id: str | None = _f(None, "name clients pass as 'model' (default: the engine's model name)")
    host: str = _f("127.0.0.1", "HTTP host for `longwriter serve` (0.0.0.0 to listen on all interfaces)")
    port: int = _f(8000, "HTTP port for `longwriter serve`")
    min_replicas: int = _f(1, "fewest engine replicas")
    max_replicas: int = _f(2, "most engine replicas")
    target_ongoing_requests: float = _f(16.0, "autoscaling target: ongoing requests per replica")
    max_ongoing_requests: int = _f(48, "requests one replica runs at once (bounds the engine batch)")
    max_queued_requests: int = _f(64, "requests waiting for a replica, per caller; beyond: 503 + Retry-After")
    retry_after_s: float = _f(5.0, "Retry-After seconds sent with a 503 on overload")
    upscale_delay_s: float = _f(30.0, "seconds above target before adding a replica")
    downscale_delay_s: float = _f(300.0, "seconds below target before removing one (engines are slow to start)")
    metrics_interval_s: float = _f(2.0, "how often replicas report load to the autoscaler")
    device: str = _f("auto", "cpu or gpu replicas; auto: gpu when the Ray cluster has GPUs")
    replica_num_cpus: float | None = _f(None, "Ray CPUs per engine replica (default: 0 on CPU, where vLLM binds its own threads; 1 on GPU)")
    # repr=False: a printed or logged ServeConfig never shows the key.
    api_key: str | None = field(default=None, repr=False, metadata={"help": (
        "require 'Authorization: Bearer KEY' on every route but /health, /ready and the playground page; "
        "unset: the key is read from the variable api_key_env names (prefer that: a flag shows in `ps`)")})
    api_key_env: str | None = _f("LONGWRITER_API_KEY", "environment variable with the API key when api_key is unset, read "
                                 "where the app is built: `longwriter serve`'s own environment, or the build task "
                                 "that serve run / serve deploy start on the cluster (never the replicas' environment)")
    insecure_no_key: bool = _f(False, "allow listening beyond loopback (e.g. host 0.0.0.0) without an API key; "
                                      "without it such an app refuses to start")
    cors_origins: list[str] = _f([], "origins browsers may call the API from (CORS allow-list, e.g. https://app.example.com); "
                                     "default none: cross-origin requests get no Access-Control-Allow-Origin")
    max_body_bytes: int = _f(1048576, "largest request body in bytes (Content-Length or streamed); beyond: 413", ge=1)
    max_documents_in_flight: int = _f(64, "documents /v1/longwrite writes at once per ingress replica; "
                                          "beyond: 429 + Retry-After", ge=1)
    request_timeout_s: float = _f(3600.0, "longest a /v1/longwrite request may run")
