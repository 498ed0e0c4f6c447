"""The training path on a GPU, without Ray: what each Ray Train worker builds, run in one process.

The lent GPU machines have torch and transformers but no Ray, so this runs the worker's own
``make_trainer`` (the same data preparation, SFTTrainer / DPOTrainer config, bf16 and export)
outside Ray Train, on a randomly initialised Llama of a chosen size with the embedded model's
tokenizer, and prints one JSON line per variant:

    python benchmarks/train_gpu.py --variant sft  --corpus out/examples
    python benchmarks/train_gpu.py --variant lora --corpus out/examples
    python benchmarks/train_gpu.py --variant dpo  --corpus out/examples
    torchrun --nproc_per_node 1 benchmarks/train_gpu.py --variant fsdp --corpus out/examples
    python benchmarks/train_gpu.py --variant packed --max-length 16384 --batch 1 --corpus out/examples

``packed`` packs the corpus into --max-length rows (trl's BFD packing, padding-free) with
gradient checkpointing: the long-sequence path. ``fsdp`` uses configs/fsdp2_llama8b.json (the documented 8-GPU example) on as many GPUs as
torchrun starts. Reported: loss (or DPO margin) at the start and the end, trained tokens/s,
peak GPU memory, and whether the exported model loads and generates. It also runs on CPU
(use --hidden 64 --layers 2 --steps 4 there). The lent machine needs trl and datasets carried
as wheels; README "Multi-GPU" has the numbers of its last run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import StorageConfig  # noqa: E402
from core.train_config import DPOJobConfig, SFTJobConfig  # noqa: E402
from ray_jobs import dpo, sft  # noqa: E402
from ray_jobs.dpo import prepare_dpo_data  # noqa: E402
from ray_jobs.sft import read_conversations, tokenize_corpus  # noqa: E402
from ray_jobs.train_data import load_tokenizer  # noqa: E402
from ray_jobs.train_export import export_model  # noqa: E402
from ray_jobs.train_worker import make_trainer  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pairs_from_corpus(convs: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """Length-preference pairs from finished documents: the whole text beats its first third."""
    rows = []
    for msgs in convs:
        user = next(m["content"] for m in msgs if m["role"] == "user")
        text = next(m["content"] for m in msgs if m["role"] == "assistant")
        words = text.split()
        rows.append({"prompt": user, "chosen": text, "rejected": " ".join(words[: max(1, len(words) // 3)])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["sft", "lora", "dpo", "fsdp", "packed"], required=True)
    p.add_argument("--corpus", required=True, help="output of longwriter generate (its messages column)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory; default: the embedded model's")
    p.add_argument("--hidden", type=int, default=2048, help="width of the random Llama (2048 x 16 layers: ~0.6B)")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4, help="sequences per device per step")
    p.add_argument("--fsdp-config", default=str(ROOT / "configs" / "fsdp2_llama8b.json"))
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None, help="append the JSON line to this file too")
    a = p.parse_args()

    import torch

    rank = int(os.environ.get("RANK", "0"))
    gpu = torch.cuda.is_available()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lw-gpu-"))
    model_dir = work / f"llama-{a.hidden}x{a.layers}"
    if rank == 0 and not (model_dir / "config.json").exists():
        build_tiny_model(str(model_dir), a.tokenizer, hidden=a.hidden, layers=a.layers, max_positions=a.max_length)
    if torch.distributed.is_available() and "WORLD_SIZE" in os.environ:
        import torch.distributed as dist

        dist.init_process_group("nccl" if gpu else "gloo")
        dist.barrier()

    common = dict(output=str(work / f"out-{a.variant}"), use_gpu=gpu, max_steps=a.steps, logging_steps=1,
                  per_device_batch_size=a.batch, max_length=a.max_length, save_steps=10_000, warmup_ratio=0.1)
    convs = read_conversations(a.corpus, StorageConfig())
    tok = load_tokenizer(str(model_dir))
    if a.variant == "dpo":
        cfg = DPOJobConfig(pairs=a.corpus, learning_rate=1e-5, **common)
        table, _ = prepare_dpo_data(cfg, pairs_from_corpus(convs), tok)
        builder = dpo.build_trainer
    else:
        cfg = SFTJobConfig(data=a.corpus, learning_rate=3e-4, lora=a.variant == "lora",
                           gradient_checkpointing=a.variant in ("sft", "lora", "packed"), packing=a.variant == "packed",
                           fsdp_config=a.fsdp_config if a.variant == "fsdp" else None, **common)
        table, _ = tokenize_corpus(convs, cfg, tok)
        builder = sft.build_trainer
    cfg.validate()
    trainer, tok = make_trainer(cfg, str(model_dir), builder, table, str(work / f"hf-{a.variant}"))
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train()
    secs = time.perf_counter() - t0
    hist = trainer.state.log_history
    key = "rewards/margins" if a.variant == "dpo" else "loss"
    series = [h[key] for h in hist if key in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    model_uri = export_model(trainer, tok, {"cfg": cfg, "scfg": StorageConfig()}, rank, str(work / f"exp-{a.variant}"))
    row = {"variant": a.variant, "device": torch.cuda.get_device_name() if gpu else "cpu",
           "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 1),
           "steps": trainer.state.global_step, "rows": len(trainer.train_dataset), "max_length": a.max_length, f"{key}_first": series[0], f"{key}_last": series[-1],
           "tokens_per_s": round(tokens / max(out.metrics.get("train_runtime", secs), 1e-9)),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
           "bf16": bool(trainer.args.bf16), "wall_s": round(secs, 1)}
    if rank == 0:
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(model_uri, dtype=torch.bfloat16 if gpu else torch.float32)
        m.to("cuda" if gpu else "cpu")
        ids = tok.apply_chat_template([{"role": "user", "content": "Write about rivers."}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        gen = m.generate(**{k: v.to(m.device) for k, v in ids.items()}, max_new_tokens=16, do_sample=False)
        row["export_generates"] = int(gen.shape[1] - ids["input_ids"].shape[1])
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
