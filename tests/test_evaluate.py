"""LongBench-Write evaluation end to end (ray_jobs.evaluate): generate, judge, score, report, compare."""

from __future__ import annotations

import json
import re
import statistics

import pyarrow.parquet as pq
import pytest
from conftest import LONGBENCH

from core.config import AgentWriteConfig, EngineConfig
from core.text import detect_language
from core.scores import JUDGE_DIMENSIONS, quality_score


def _bench_rows() -> list[dict]:
    en = [json.loads(line) for line in (LONGBENCH / "longbench_write_en.jsonl").open(encoding="utf-8")]
    both = [json.loads(line) for line in (LONGBENCH / "longbench_write.jsonl").open(encoding="utf-8")]
    zh = [r for r in both if detect_language(r["prompt"]) == "zh"]
    return sorted(en, key=lambda r: r["length"])[:4] + sorted(zh, key=lambda r: r["length"])[:2]


def _overall(md: str, metric: str) -> float | None:
    m = re.search(rf"^\| {re.escape(metric)} \| ([^|]+) \|$", md, re.M)
    assert m, f"no '{metric}' row in the report"
    value = m.group(1).strip()
    return None if value == "n/a" else float(value)


def _report_buckets(md: str) -> set[str]:
    section = md.split("## By length bucket", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| length bucket")]
    return {ln.split("|")[1].strip() for ln in rows}


# Runs the REAL vLLM engine (CPU, embedded SmolLM2-135M) and REAL Ray Data: several minutes on 2 cores.
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_eval_end_to_end_then_reuse_generations_and_compare(tmp_path, event_loop_thread, run_on_engine, capsys):
    from core.engines import build_engine
    from ray_jobs.cli import main as cli_main
    from ray_jobs.evaluate import EvalConfig, run_eval

    rows = _bench_rows()
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out1, out2 = tmp_path / "eval1", tmp_path / "eval2"
    ecfg = EngineConfig(enforce_eager=True)
    # One judge engine for both evaluations, on the session's background loop. vLLM starts lazily
    # on the first judge call, i.e. after the Ray generation job has finished and freed the cores.
    judge = build_engine(EngineConfig(enforce_eager=True))
    try:
        s1 = run_eval(EvalConfig(bench=str(bench), output=str(out1), run_id="e2e"), ecfg, AgentWriteConfig(),
                      judge_engine=judge, run_async=run_on_engine)
        # --generations: score the first run's documents again, no generation.
        s2 = run_eval(EvalConfig(bench=str(bench), output=str(out2), generations=str(out1 / "generations")),
                      ecfg, AgentWriteConfig(), judge_engine=judge, run_async=run_on_engine)
    finally:
        run_on_engine(judge.close(), timeout=120)

    # ---- the first evaluation: files exist and agree with each other
    md = (out1 / "report.md").read_text(encoding="utf-8")
    png = (out1 / "lengths.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    results = pq.read_table(out1 / "results.parquet").to_pylist()
    summary = json.loads((out1 / "summary.json").read_text())
    assert len(results) == 6 and summary["overall"]["n"] == 6
    assert [r["id"] for r in results] == [f"bench-{i:04d}" for i in range(6)]
    assert [r["language"] for r in results] == ["en"] * 4 + ["zh"] * 2
    assert [r["required"] for r in results] == [r["length"] for r in rows]
    assert list((out1 / "generations" / "run_id=e2e").glob("part-*.parquet"))
    assert sum(r["status"] == "ok" for r in results) >= 5, [r["error"] for r in results]

    mean_sl = statistics.fmean(r["s_l"] for r in results)
    assert _overall(md, "S_l (length following)") == pytest.approx(mean_sl, abs=0.051)
    assert summary["overall"]["S_l"] == pytest.approx(mean_sl)
    assert _report_buckets(md) == {r["bucket"] for r in results} == set(summary["by_bucket"])

    judged = [{d: r[d] for d in JUDGE_DIMENSIONS} for r in results if r["judge_status"] == "ok"]
    with_text = [r for r in results if r["status"] == "ok"]
    assert len(judged) + summary["counts"]["judge_dropped"] == len(with_text)
    assert _overall(md, "judgments dropped") == summary["counts"]["judge_dropped"]
    assert judged, "the judge produced no usable judgment at all"
    s_q = quality_score(judged)
    assert _overall(md, "S_q (quality, judge)") == pytest.approx(s_q, abs=0.051)
    assert _overall(md, "S = (S_l + S_q) / 2") == pytest.approx((mean_sl + s_q) / 2, abs=0.051)
    for r in with_text:
        assert 0 <= r["repeated_4gram_share"] <= 1 and r["longest_repeat"] >= 0
        assert r["sections"] >= 1 and r["section_error"] is not None

    # ---- the second evaluation reused the documents
    assert not (out2 / "generations").exists() and s2["generations_reused"]
    results2 = pq.read_table(out2 / "results.parquet").to_pylist()
    assert [(r["id"], r["produced"], r["s_l"]) for r in results2] == [(r["id"], r["produced"], r["s_l"]) for r in results]
    assert s2["overall"]["S_l"] == pytest.approx(s1["overall"]["S_l"])

    # ---- eval-compare: a side-by-side Markdown table, printed and written
    capsys.readouterr()
    assert cli_main(["eval-compare", str(out1), str(out2), "--out", str(tmp_path / "compare.md")]) == 0
    table = capsys.readouterr().out
    assert table == (tmp_path / "compare.md").read_text()
    assert "| scope | metric | A | B | B - A |" in table
    sl_row = re.search(r"^\| overall \(n=6/6\) \| S_l \| ([\d.]+) \| ([\d.]+) \| \+0\.0 \|$", table, re.M)
    assert sl_row and float(sl_row.group(1)) == pytest.approx(mean_sl, abs=0.051)
    for b in summary["by_bucket"]:
        assert f"| {b} (n=" in table
