"""Training jobs: SFT and DPO on Ray Train with trl, checkpoints on S3 (moto), resume, export.

The slow tests (marked ``slow``) run real Ray Train (2 CPU workers) + trl on a tiny randomly
initialised Llama (hidden 64, 2 layers) that carries the embedded model's tokenizer and chat
template, so each run takes well under a minute of compute; most of the wall time is Ray
starting workers. The data and failure-path tests need no Ray.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import storage
from core.config import EngineConfig, StorageConfig
from core.engines.base import GenResult
from core.records import Document, documents_to_table
from core.train_config import DPOJobConfig, PairsConfig, SFTJobConfig
from ray_jobs.train_data import DataError

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["lighthouses", "bridges", "rivers", "mountains", "bread", "tea", "clocks", "maps"]


def corpus_docs(n: int = 16) -> list[Document]:
    docs = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        text = f"A short note on {t}. " + " ".join(f"People value {t} because {t} help them every day." for _ in range(3))
        docs.append(Document(id=f"d{i}", prompt=f"Write a short note about {t}.", target_words=40,
                             target_source="row", text=text, word_count=len(text.split()), model="test"))
    docs.append(Document(id="bad", prompt="Write nothing.", target_words=10, target_source="row",
                         status="failed", error="engine exploded"))
    return docs


@pytest.fixture(scope="module", autouse=True)
def ray_shutdown_after():
    """The jobs start a local Ray cluster in this process when none is up; stop it after this module."""
    yield
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from ray_jobs.train_data import load_tokenizer

    return load_tokenizer(tiny_model)


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "longwriter"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def assert_one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, r.stderr
    assert needle in errors[0], errors[0]


# ---------------------------------------------------------------- data preparation (no Ray)


def test_assistant_only_labels(tokenizer):
    from ray_jobs.sft import tokenize_conversation

    msgs = [{"role": "user", "content": "Write about tea."}, {"role": "assistant", "content": "Tea is a drink."}]
    ids, labels = tokenize_conversation(tokenizer, msgs)
    assert len(ids) == len(labels)
    trained = [i for i, x in zip(ids, labels) if x != -100]
    text = tokenizer.decode(trained)
    assert text.startswith("Tea is a drink.") and "<|im_end|>" in text  # the answer and its end-of-turn token
    assert "Write about tea" not in text and "system" not in text
    first = labels.index(next(x for x in labels if x != -100))
    assert all(x == -100 for x in labels[:first]) and all(x != -100 for x in labels[first:])


def test_too_long_sequences_dropped_or_truncated(tmp_path, tokenizer, capsys):
    from ray_jobs.sft import prepare_sft_data

    docs = corpus_docs(4)
    long_text = " ".join(["lighthouse"] * 400)
    docs.append(Document(id="long", prompt="Write a long one.", target_words=400, target_source="row",
                         text=long_text, word_count=400))
    part = tmp_path / "corpus" / "run_id=r" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(documents_to_table(docs), part)
    cfg = SFTJobConfig(data=str(tmp_path / "corpus"), output=str(tmp_path / "o"), max_length=128)
    table, info = prepare_sft_data(cfg, None, tokenizer)
    assert (table.num_rows, info["too_long"], info["corpus_rows"]) == (4, 1, 5)  # the failed row is not read
    assert "1 of 5 sequences are longer than --max-length 128 tokens: dropped" in capsys.readouterr().err
    cfg.on_too_long = "truncate"
    table, info = prepare_sft_data(cfg, None, tokenizer)
    assert table.num_rows == 5 and max(len(x) for x in table.column("input_ids").to_pylist()) == 128
    # A --max-length that would drop most of the corpus stops the job instead of training on the rest.
    cfg.on_too_long, cfg.max_length = "drop", 16
    with pytest.raises(DataError, match=r"5 of 5 sft rows \(100%\) are longer than --max-length 16 tokens"):
        prepare_sft_data(cfg, None, tokenizer)
    cfg.max_drop_share = 1.0  # the old behaviour on request: then it fails only when nothing is left
    with pytest.raises(DataError, match="no training sequences left"):
        prepare_sft_data(cfg, None, tokenizer)


def test_make_pairs_ranks_by_length_score(tmp_path):
    """make-pairs through the real AgentWriter (direct mode) on a scripted engine."""
    from ray_jobs.pairs import PAIRS_SCHEMA, run_make_pairs

    class ScriptedEngine:
        """Answers of 5, 60 and 200 words in turn: 60 is on target, 5 is the worst."""

        model_name, max_model_len = "scripted", 4096

        def __init__(self):
            self.calls = 0

        async def generate(self, messages=None, *, prompt=None, sampling=None):
            words = (5, 60, 200)[self.calls % 3]
            self.calls += 1
            await asyncio.sleep(0)
            text = " ".join("".join(chr(97 + (k // 26 ** p) % 26) for p in range(3)) for k in range(words))
            return GenResult(text=text + ".", finish_reason="stop", prompt_tokens=10,  # distinct words: no loop
                             generated_tokens=words)

        def count_tokens(self, messages):
            return 10

        async def close(self):
            pass

    inp = tmp_path / "prompts.jsonl"
    inp.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"Write about {t}.", "length": 60})
                             for i, t in enumerate(TOPICS[:4])) + "\n{not json}\n")
    engine = ScriptedEngine()
    s = run_make_pairs(PairsConfig(input=str(inp), output=str(tmp_path / "pairs"), samples=3),
                       EngineConfig(), engine=engine)
    assert engine.calls == 12 and s["pairs"] == 4 and s["bad_rows"] == 1
    t = pq.read_table(tmp_path / "pairs" / "pairs.parquet")
    assert t.schema.equals(PAIRS_SCHEMA, check_metadata=False)
    assert s["signal"] == "length only"
    for r in t.to_pylist():  # the on-target answer is chosen; the rejected one is drawn from the other two
        assert r["chosen_words"] == 60 and r["rejected_words"] in (5, 200) and r["target_words"] == 60
        assert r["chosen_score"] == 100.0 and r["chosen_score"] > r["rejected_score"]
    assert len({r["rejected_words"] for r in t.to_pylist()}) == 2  # 4 draws, seeded per id, hit both here


# ---------------------------------------------------------------- bad input: one-line errors from the CLI


def test_cli_bad_inputs(tmp_path, tiny_model, s3_server):
    # A corpus without messages (prompts only).
    nomsg = tmp_path / "nomsg"
    nomsg.mkdir()
    pq.write_table(pa.table({"id": ["a"], "prompt": ["hi"]}), nomsg / "part-0.parquet")
    r = cli("sft", "--data", str(nomsg), "--model", tiny_model, "--output", str(tmp_path / "o1"))
    assert_one_line_error(r, f"corpus at {nomsg} has no 'messages' column (expected the output of longwriter generate)")

    # An empty corpus on S3: only failed rows.
    prefix = f"s3://lwtest/bad-{uuid.uuid4().hex[:8]}"
    failed = [d for d in corpus_docs(2) if d.status != "ok"]
    storage.write_parquet(storage.resolve(f"{prefix}/corpus/run_id=r/part-0.parquet"), documents_to_table(failed))
    r = cli("sft", "--data", f"{prefix}/corpus", "--model", tiny_model, "--output", f"{prefix}/out")
    assert_one_line_error(r, "is empty: no rows with status ok")

    # Unreachable storage: an S3 endpoint on a closed port.
    from tests.conftest import free_port

    r = cli("sft", "--data", "s3://lwtest/corpus", "--model", tiny_model, "--output", str(tmp_path / "o3"),
            env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert_one_line_error(r, "cannot reach s3://lwtest/corpus")


# ---------------------------------------------------------------- Ray Train runs (slow)


@pytest.fixture(scope="module")
def sft_run(s3_server, tiny_model):
    """One real SFT run (Ray Train, 2 workers, trl) on a corpus on S3, with worker rank 1 killed at
    step 14 once: the group restarts from the step-10 checkpoint and finishes 24 steps."""
    from ray_jobs.sft import run_sft

    prefix = f"s3://lwtest/sft-{uuid.uuid4().hex[:8]}"
    storage.write_parquet(storage.resolve(f"{prefix}/corpus/run_id=r1/part-0.parquet"), documents_to_table(corpus_docs()))
    cfg = SFTJobConfig(data=f"{prefix}/corpus", model=tiny_model, output=f"{prefix}/out", num_workers=2,
                       max_steps=24, save_steps=10, learning_rate=3e-3, max_length=256, seed=7, fail_at_step=14)
    summary = run_sft(cfg, StorageConfig())
    return prefix, summary


@pytest.mark.slow  # real Ray Train + trl (2 workers, a worker restart)
def test_sft_on_s3_loss_checkpoints_export(sft_run, tmp_path):
    prefix, s = sft_run
    assert s["rows"] == 16 and s["global_step"] == 24
    losses = [v for _, v in s["losses"]]
    assert len(losses) == 24 and s["final_loss"] < s["first_loss"] - 0.5, losses
    assert s["tokens_per_s"] and s["tokens_per_s"] > 0
    # Checkpoints live on S3 under OUTPUT/ray_train/RUN, each a complete HF checkpoint.
    run = storage.resolve(f"{prefix}/out/ray_train/{s['run_name']}")
    files = storage.list_files(run)
    ckpt_states = [f for f in files if f.endswith("/checkpoint/trainer_state.json")]
    assert ckpt_states, files
    assert any(f.endswith("/checkpoint/optimizer.pt") for f in files)
    assert any(f.endswith("/checkpoint/rng_state_1.pth") for f in files)  # rank 1 uploaded its own files
    assert s["latest_checkpoint"].startswith("s3://lwtest/")
    # The exported model is a plain HF directory on S3 that transformers loads and runs.
    model_loc = storage.resolve(s["model"])
    names = {f.rsplit("/", 1)[-1] for f in storage.list_files(model_loc)}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names, names
    local = tmp_path / "model"
    local.mkdir()
    storage.pafs.copy_files(model_loc.path, str(local), source_filesystem=model_loc.fs)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local)
    model = AutoModelForCausalLM.from_pretrained(local)
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a short note about tea."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    summary = json.loads(storage.read_bytes(storage.resolve(f"{prefix}/out/summary.json")))
    assert summary["global_step"] == 24 and summary["model"] == s["model"]


@pytest.mark.slow  # real Ray Train + trl: the run above lost a worker at step 14
def test_sft_worker_failure_resumes_from_checkpoint(sft_run):
    _, s = sft_run
    # The attempt that finished started from the step-10 checkpoint, not from 0, and ran to the end.
    assert s["resumed_from_step"] == 10
    assert s["steps_this_attempt"] == 14 and s["global_step"] == s["max_steps"] == 24
    # The loss history is continuous across the restart (restored from the checkpoint's trainer state).
    assert [st for st, _ in s["losses"]] == list(range(1, 25))


@pytest.mark.slow  # real Ray Train + trl DPO (2 workers)
def test_dpo_raises_reward_margin(tmp_path, tiny_model):
    """Pairs: on-target texts (chosen) vs very short ones (rejected), written in make-pairs' schema."""
    from ray_jobs.dpo import run_dpo
    from ray_jobs.pairs import pairs_table

    rows = []
    for i, t in enumerate(TOPICS):
        chosen = " ".join(f"{t.capitalize()} shape how people live, and this note explains why in detail." for _ in range(5))
        rows.append({"id": f"p{i}", "prompt": f"Write about {t} in 60 words.", "chosen": chosen,
                     "rejected": f"{t} are fine.", "chosen_score": 100.0, "rejected_score": 0.0,
                     "chosen_words": 60, "rejected_words": 3, "target_words": 60, "language": "en",
                     "samples": 2, "model": "hand-made"})
    pq.write_table(pairs_table(rows), tmp_path / "pairs.parquet")
    cfg = DPOJobConfig(pairs=str(tmp_path / "pairs.parquet"), model=tiny_model, output=str(tmp_path / "dpo"),
                       num_workers=2, max_steps=12, save_steps=12, learning_rate=5e-3, beta=0.1, max_length=256,
                       seed=3)
    s = run_dpo(cfg)
    assert s["global_step"] == 12 and s["rows"] == 8
    margins = [v for _, v in s["margins"]]
    assert s["mean_margin_last"] > s["mean_margin_first"] + 0.1, margins
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()
    assert list((tmp_path / "dpo" / "ray_train" / s["run_name"]).glob("checkpoint_*/checkpoint/trainer_state.json"))


@pytest.mark.slow  # real vLLM (CPU) samples, then real Ray Train + trl on them
def test_make_pairs_on_the_real_model_then_dpo_on_its_pairs(tmp_path, tiny_model):
    """The chain as a user runs it: `longwriter make-pairs` on the embedded model, then `longwriter dpo`."""
    inp = tmp_path / "prompts.jsonl"
    inp.write_text("\n".join(json.dumps({"id": f"p{i}", "prompt": f"Write a short note about {t}.", "length": 120})
                             for i, t in enumerate(TOPICS[:4])) + "\n")
    r = cli("make-pairs", "--input", str(inp), "--output", str(tmp_path / "pairs"), "--samples", "4",
            "--min-margin", "0", "--enforce-eager", "--max-model-len", "2048", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    pairs = pq.read_table(tmp_path / "pairs" / "pairs.parquet").to_pylist()
    assert 1 <= len(pairs) <= 4
    for p in pairs:  # best vs worst by S_l against the 120-word target, on real model output
        assert p["chosen_score"] >= p["rejected_score"] and p["chosen"] != p["rejected"]
        assert p["target_words"] == 120 and p["model"] == "SmolLM2-135M-Instruct"
    r = cli("dpo", "--pairs", str(tmp_path / "pairs"), "--model", tiny_model, "--output", str(tmp_path / "dpo"),
            "--num-workers", "2", "--max-steps", "12", "--save-steps", "12", "--max-length", "512",
            "--learning-rate", "5e-3", "--beta", "0.1", "--seed", "3", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert summary["global_step"] == 12 and summary["rows"] == len(pairs)
    assert summary["mean_margin_last"] > summary["mean_margin_first"], summary["margins"]
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()


@pytest.mark.slow  # real Ray Train + trl: the same command again, with more steps
def test_sft_rerun_same_name_continues(sft_run, tiny_model):
    """Rerunning with the same output (hence run name) continues from the stored checkpoint."""
    from ray_jobs.sft import run_sft

    prefix, first = sft_run
    cfg = SFTJobConfig(data=f"{prefix}/corpus", model=tiny_model, output=f"{prefix}/out", num_workers=2,
                       max_steps=28, save_steps=10, learning_rate=3e-3, max_length=256, seed=7)
    s = run_sft(cfg, StorageConfig())
    assert s["run_name"] == first["run_name"]
    assert (s["resumed_from_step"], s["steps_this_attempt"], s["global_step"]) == (24, 4, 28)
    assert [st for st, _ in s["losses"]] == list(range(1, 29))


@pytest.mark.slow  # real vLLM engine (CPU, enforce_eager): ~40 s, once
@pytest.mark.skipif(bool(os.environ.get("LONGWRITER_SKIP_VLLM_EXPORT")), reason="LONGWRITER_SKIP_VLLM_EXPORT is set")
def test_exported_model_runs_in_vllm(sft_run, tmp_path):
    """The exported SFT model (downloaded from S3) loads in vLLM through core.engines and generates."""
    from core.config import EngineConfig
    from core.engines.base import SamplingSpec
    from core.engines.vllm_engine import VLLMEngine

    _, s = sft_run
    loc = storage.resolve(s["model"])
    local = tmp_path / "model"
    local.mkdir()
    storage.pafs.copy_files(loc.path, str(local), source_filesystem=loc.fs)

    async def go():
        eng = VLLMEngine(str(local), EngineConfig(enforce_eager=True, max_model_len=512, kv_cache_gib=1,
                                                  max_num_seqs=4), model_name="tiny-sft")
        try:
            return await eng.generate([{"role": "user", "content": "Write a short note about tea."}],
                                      sampling=SamplingSpec(max_tokens=8, temperature=0.0))
        finally:
            await eng.close()

    r = asyncio.run(go())
    assert r.generated_tokens > 0


def test_sharding_example_configs_reach_the_trainer(tmp_path):
    """configs/*.json (the documented 8-GPU examples) pass our checks and transformers' own parsing."""
    from trl import SFTConfig

    from ray_jobs.train_worker import training_kwargs

    cfg = SFTJobConfig(data="x", output=str(tmp_path), use_gpu=True, fsdp_config=str(ROOT / "configs" / "fsdp2_llama8b.json"))
    cfg.validate()
    args = SFTConfig(**training_kwargs(cfg, str(tmp_path / "hf")))
    assert args.fsdp is True and args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert args.fsdp_plugin_args["activation_checkpointing"] is True

    ds = str(ROOT / "configs" / "deepspeed_zero3.json")
    assert json.loads(Path(ds).read_text())["zero_optimization"]["stage"] == 3
    with pytest.raises(ValueError, match="choose one of FSDP"):
        SFTJobConfig(data="x", output="o", use_gpu=True, fsdp="true", deepspeed=ds).validate()
    with pytest.raises(ValueError, match="--fsdp-config .*nope.json: cannot read it"):
        SFTJobConfig(data="x", output="o", use_gpu=True, fsdp_config=str(tmp_path / "nope.json")).validate()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SFTJobConfig(data="x", output="o", use_gpu=True, deepspeed=str(bad)).validate()
    # On the command line: a one-line error, before Ray or a model is touched.
    r = cli("sft", "--data", "x", "--output", str(tmp_path / "o"), "--fsdp-config", str(ROOT / "configs" / "fsdp2_llama8b.json"))
    assert_one_line_error(r, "--fsdp/--fsdp-config/--deepspeed shard across GPUs: add --use-gpu")


def test_fsdp_false_means_off(tmp_path):
    from ray_jobs.train_worker import training_kwargs

    cfg = SFTJobConfig(data="x", output=str(tmp_path), fsdp="false")
    cfg.validate()  # no --use-gpu needed: FSDP is off
    assert not cfg.fsdp_enabled and "fsdp" not in training_kwargs(cfg, str(tmp_path / "hf"))
