"""SFT throughput under Ray Train against plain trl in one process, on the same data and steps.

    python benchmarks/train_throughput.py                        # tiny model, 2 workers, 30 steps
    python benchmarks/train_throughput.py --model ./base --steps 50 --max-length 1024 --workers 4 --use-gpu

Both sides train the same pre-tokenized corpus (synthetic documents in the generation job's
schema, tokenized by ``ray_jobs.sft.tokenize_corpus``) with the same global batch
(workers x per-device batch), the same number of optimizer steps and one checkpoint at the end:

1. **ray**: ``longwriter sft``'s code path (``ray_jobs.sft`` via ``run_training``): a TorchTrainer
   with ``--workers`` data-parallel workers, checkpoint to the run's storage.
2. **plain**: one ``trl.SFTTrainer`` in this process, per-device batch = the global batch.

Printed: trained tokens/s inside the training loop (``train_runtime``) for each and their ratio,
and the end-to-end wall time (Ray includes starting the workers). On a CPU machine both sides
share the same cores, so the ratio measures the data-parallel overhead (gradient all-reduce,
per-worker Python), not a speed-up; on GPUs each worker brings its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from core.records import Document, documents_to_table  # noqa: E402
from core.train_config import SFTJobConfig  # noqa: E402

TOPICS = ["lighthouses", "bridges", "rivers", "mountains", "bread", "tea", "clocks", "maps", "trains", "gardens"]


def corpus(rows: int, words: int) -> list[Document]:
    docs = []
    for i in range(rows):
        t = TOPICS[i % len(TOPICS)]
        sent = f"People have cared about {t} for a long time, and case {i} shows why {t} still matter. "
        text = (sent * (words // len(sent.split()) + 1)).strip()
        docs.append(Document(id=f"d{i}", prompt=f"Write about {t} (case {i}).", target_words=words,
                             target_source="row", text=text, word_count=len(text.split())))
    return docs


def plain_trl(cfg: SFTJobConfig, table, model_path: str, workers: int, out_dir: str, threads: int | None) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from ray_jobs.sft import build_trainer
    from ray_jobs.train_data import load_tokenizer
    from ray_jobs.train_worker import training_kwargs

    torch.manual_seed(cfg.seed)
    if threads:
        torch.set_num_threads(threads)
    tok = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    kw = training_kwargs(cfg, out_dir)
    kw["per_device_train_batch_size"] = cfg.per_device_batch_size * workers  # same global batch
    trainer = build_trainer(model=model, tokenizer=tok, train_dataset=datasets.Dataset(table), cfg=cfg,
                            kwargs=kw, peft_config=None)
    out = trainer.train()
    runtime = out.metrics["train_runtime"]
    return {"tokens": trainer.state.num_input_tokens_seen, "runtime_s": runtime, "threads": torch.get_num_threads(),
            "tokens_per_s": trainer.state.num_input_tokens_seen / runtime,
            "final_loss": [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF model directory (default: a tiny random Llama with the embedded tokenizer)")
    ap.add_argument("--hidden", type=int, default=128, help="tiny model hidden size")
    ap.add_argument("--layers", type=int, default=2, help="tiny model layers")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--words", type=int, default=150, help="words per document")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="per-device batch on the Ray side")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--plain-threads", type=int, default=None,
                    help="torch threads of the plain run (default: torch's default; Ray workers run 1 each on CPU)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    import pyarrow.parquet as pq

    from ray_jobs.sft import build_trainer, read_conversations, tokenize_corpus
    from ray_jobs.train_data import load_tokenizer
    from ray_jobs.train_launch import run_training
    from tests.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="lw-train-bench-"))
    model = a.model or build_tiny_model(str(work / "tiny"), hidden=a.hidden, layers=a.layers)
    (work / "corpus" / "run_id=bench").mkdir(parents=True)
    pq.write_table(documents_to_table(corpus(a.rows, a.words)), work / "corpus" / "run_id=bench" / "part-0.parquet")
    cfg = SFTJobConfig(data=str(work / "corpus"), model=model, output=str(work / "ray-out"), num_workers=a.workers,
                       use_gpu=a.use_gpu, max_steps=a.steps, save_steps=a.steps, per_device_batch_size=a.batch,
                       max_length=a.max_length, learning_rate=1e-3, logging_steps=10, seed=1)
    tok = load_tokenizer(model)
    table, info = tokenize_corpus(read_conversations(cfg.data, None), cfg, tok)
    print(f"data: {info['rows']} sequences, {info['tokens_in_data']} tokens (longest {info['max_seq_tokens']}); "
          f"{a.steps} steps, global batch {a.workers * a.batch}", file=sys.stderr)

    t0 = time.time()
    base = plain_trl(cfg, table, model, a.workers, str(work / "plain"), a.plain_threads)
    base["wall_s"] = time.time() - t0
    t0 = time.time()
    s = run_training("sft", cfg, None, table, build_trainer, info)
    ray_res = {"tokens": s["tokens_this_attempt"], "runtime_s": s["train_runtime_s"],
               "tokens_per_s": s["tokens_per_s"], "final_loss": s["final_loss"], "wall_s": time.time() - t0}

    ratio = ray_res["tokens_per_s"] / base["tokens_per_s"]
    rows = [("", f"plain trl (1 process, {base['threads']} thr)", f"Ray Train ({a.workers} workers)"),
            ("tokens trained", f"{base['tokens']}", f"{ray_res['tokens']}"),
            ("train loop s", f"{base['runtime_s']:.1f}", f"{ray_res['runtime_s']:.1f}"),
            ("tokens/s", f"{base['tokens_per_s']:.0f}", f"{ray_res['tokens_per_s']:.0f}"),
            ("wall s (incl. start-up)", f"{base['wall_s']:.1f}", f"{ray_res['wall_s']:.1f}")]
    for r in rows:
        print(f"{r[0]:<24} {r[1]:>28} {r[2]:>22}")
    print(f"ratio Ray Train / plain trl tokens/s: {ratio:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"plain": base, "ray": ray_res, "ratio": ratio, "args": vars(a)}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
