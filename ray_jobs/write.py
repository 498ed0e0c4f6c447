"""`longwriter write "INSTRUCTION"`: one document with AgentWrite, no Ray needed.

    longwriter write "Write a 1500-word essay on tides" --out tides.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from core.config import AgentWriteConfig, EngineConfig
from ray_jobs import console


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_config_flags

    p = sub.add_parser("write", help="write one long document (plan, then section by section)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("instruction", help="the writing request; a length in it ('2000 words', '3千字') is honoured")
    p.add_argument("--length", type=int, default=None, help="target words (overrides the instruction)")
    p.add_argument("--out", default=None, help="write the Markdown text here (default: stdout)")
    p.add_argument("--record", default=None, help="also write the full document record (JSON) here")
    p.add_argument("--mode", choices=["agentwrite", "direct"], default="agentwrite",
                   help="agentwrite: plan then sections (default); direct: one call")
    p.add_argument("--config", default=None, help="YAML with 'engine:' and 'agentwrite:' sections")
    add_config_flags(p, EngineConfig)
    add_config_flags(p, AgentWriteConfig, skip=("default_length",))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ray_jobs.cli import build_config, load_yaml

    if not args.instruction.strip():
        raise ValueError("empty instruction")
    if args.length is not None and args.length <= 0:
        raise ValueError(f"--length must be positive, got {args.length}")
    y = load_yaml(args.config)
    ecfg = build_config(EngineConfig, args, y.get("engine"))
    acfg = build_config(AgentWriteConfig, args, y.get("agentwrite"))
    return asyncio.run(_write(args, ecfg, acfg))


async def _write(args: argparse.Namespace, ecfg: EngineConfig, acfg: AgentWriteConfig) -> int:
    from tqdm import tqdm

    from core.agentwrite import AgentWriter
    from core.engines import build_engine

    engine = build_engine(ecfg)
    writer = AgentWriter(engine, acfg)
    bar = None

    def on_event(kind: str, doc) -> None:
        nonlocal bar
        if kind == "plan":
            bar = tqdm(total=doc.target_words, unit="word", desc=f"{len(doc.plan)} sections", file=console.stream())
            bar.update(sum(s.words for s in doc.sections))
        elif kind == "section" and bar is not None:
            s = doc.sections[-1]
            bar.update(s.words)
            bar.set_description(f"section {s.index + 1}/{len(doc.plan)}")

    console.say(f"[write] {engine.start_message()}" if hasattr(engine, "start_message")
                else f"[write] writing through {engine.model_name}")
    t0 = time.perf_counter()
    try:
        if args.mode == "direct":
            doc = await writer.write_direct(args.instruction, length=args.length)
        else:
            doc = await writer.write(args.instruction, length=args.length, on_event=on_event)
    finally:
        if bar is not None:
            bar.close()
        await engine.close()
    if doc.status != "ok":
        raise RuntimeError(doc.error)
    secs = time.perf_counter() - t0
    if args.record:
        with open(args.record, "w", encoding="utf-8") as fh:
            json.dump(doc.to_json(), fh, ensure_ascii=False, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(doc.text + "\n")
    else:
        sys.stdout.write(doc.text + "\n")
    gen_secs = max(doc.latency_s, 1e-9)
    print(f"{doc.word_count} words (target {doc.target_words}, from {doc.target_source}), "
          f"{len(doc.sections) or 1} sections, {secs:.1f} s total, "
          f"{doc.generated_tokens / gen_secs:.0f} tokens/s, prefix cache {doc.cached_tokens / max(doc.prompt_tokens, 1):.0%}"
          + (f"; wrote {args.out}" if args.out else ""), file=console.stream())
    return 0
