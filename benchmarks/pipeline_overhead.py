"""What the bulk job itself costs per document, with an engine that answers at once.

    python benchmarks/pipeline_overhead.py                      # 10^4 and 10^5 prompts
    python benchmarks/pipeline_overhead.py --sizes 1000,10000   # quicker

The engine is a stand-in, flagged as such in the output: a local OpenAI-compatible server
(FastAPI on uvicorn, in this process) that answers every plan with a one-section JSON plan and
every section with fresh non-repeating words at once, so what is left is the pipeline: reading
and validating the input, reconciling, Ray Data batching, the actors' AgentWrite state
machine and HTTP client, state saves, Parquet parts and the manifest. The job runs exactly as
a user runs it (``python -m ray_jobs.generate --endpoint ...``) with its own Ray.

For each size it prints documents/s (end to end, and between the first and last engine call),
the time from launch until the first document's first engine call, the driver's peak RSS
(VmHWM), and CPU seconds per document of every process of the job (driver, Ray's daemons and
workers, found by the job's private RAY_TMPDIR; the stand-in server is not counted). Ratios:
peak RSS of each size against the smallest (target at 10^5 vs 10^4: <= 1.5) and CPU per
document against the 10 ms target (a GPU engine takes ~0.5 s per 1,500-word document), both
with the run's fixed start-up cost included and per extra document between two sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from instant_openai import StandIn  # noqa: E402  (the tests' stand-in engine)

ROOT = Path(__file__).resolve().parents[1]
TARGET_CPU_MS = 10.0
TARGET_RSS_RATIO = 1.5
def _job_cpu(ray_tmp: str, driver: int, seen: dict[int, float]) -> None:
    """Record the CPU seconds so far of the driver and every process under the job's RAY_TMPDIR."""
    tick = os.sysconf("SC_CLK_TCK")
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        try:
            if pid != driver and marker not in (d / "environ").read_bytes():
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            seen[pid] = max(seen.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            continue


def _hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _failures(out: Path) -> str:
    """The first few error lines of failed rows, to say why the job exited non-zero."""
    import pyarrow.dataset as pads

    try:
        rows = pads.dataset(str(out), format="parquet", partitioning="hive").to_table(
            columns=["id", "status", "error"]).to_pylist()
    except Exception as e:  # noqa: BLE001 - nothing readable: say so
        return f"(no readable output: {e})"
    bad = [r for r in rows if r["status"] != "ok"]
    return f"{len(bad)} failed rows, e.g. " + "; ".join(f"{r['id']}: {r['error']}" for r in bad[:3])


def run_size(n: int, work: Path, stand_in: StandIn, args: argparse.Namespace) -> dict:
    inp = work / f"p{n}.jsonl"
    with open(inp, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"d{i}", "prompt": f"Write a short note about item {i}.", "length": 100}) + "\n")
    ray_tmp = tempfile.mkdtemp(prefix=f"lwpo{n}-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(work / f"out{n}"),
           "--endpoint", f"http://127.0.0.1:{stand_in.port}/v1", "--model", "instant", "--engines", str(args.engines),
           "--in-flight", str(args.in_flight), "--rows-per-file", str(args.rows_per_file), "--resample-tries", "0"]
    stand_in.first = stand_in.last = None
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu: dict[int, float] = {}
    hwm = 0.0
    while proc.poll() is None:
        _job_cpu(ray_tmp, proc.pid, cpu)
        hwm = max(hwm, _hwm_mib(proc.pid) or 0.0)
        time.sleep(0.5)
    wall = time.time() - t0
    err = proc.stderr.read()
    subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed at {n} prompts (exit {proc.returncode}): {_failures(work / f'out{n}')}\n"
                         f"{err[-2000:]}")
    steady = (stand_in.last - stand_in.first) if stand_in.first and stand_in.last else wall
    return {"n": n, "wall_s": wall, "docs_per_s": n / wall, "steady_docs_per_s": n / max(steady, 1e-9),
            "first_call_s": (stand_in.first - t0) if stand_in.first else None, "driver_hwm_mib": hwm,
            "cpu_s": sum(cpu.values()), "cpu_ms_per_doc": 1000 * sum(cpu.values()) / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated prompt counts (default: 10000,100000)")
    ap.add_argument("--engines", type=int, default=1, help="engine actors (default 1)")
    ap.add_argument("--in-flight", type=int, default=64, help="documents in flight per actor (default 64)")
    ap.add_argument("--rows-per-file", type=int, default=256, help="rows per input batch (default 256)")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    stand_in = StandIn()
    stand_in.start()
    print("engine: STAND-IN (instant local OpenAI-compatible server), not a model; pipeline cost only")
    results = []
    with tempfile.TemporaryDirectory(prefix="lwpo") as tmp:
        for n in sizes:
            r = run_size(n, Path(tmp), stand_in, args)
            results.append(r)
            print(f"{n:>8} prompts: {r['wall_s']:7.1f} s, {r['docs_per_s']:7.1f} docs/s end to end, "
                  f"{r['steady_docs_per_s']:7.1f} between first and last call; first call after "
                  f"{r['first_call_s']:.1f} s; driver peak RSS {r['driver_hwm_mib']:.0f} MiB; "
                  f"{r['cpu_ms_per_doc']:.2f} ms CPU/doc", flush=True)
    base = results[0]
    for r in results[1:]:
        print(f"driver peak RSS {r['n']} vs {base['n']}: {r['driver_hwm_mib'] / base['driver_hwm_mib']:.2f}x "
              f"(target <= {TARGET_RSS_RATIO} at 10^5 vs 10^4)")
    for r in results:
        print(f"CPU per document at {r['n']} (fixed start-up costs included): "
              f"{r['cpu_ms_per_doc'] / TARGET_CPU_MS:.2f}x the {TARGET_CPU_MS:.0f} ms target")
    for a, b in zip(results, results[1:]):
        marginal = 1000 * (b["cpu_s"] - a["cpu_s"]) / (b["n"] - a["n"])
        fixed = a["cpu_s"] - marginal * a["n"] / 1000
        print(f"CPU per extra document, {a['n']} -> {b['n']}: {marginal:.2f} ms = "
              f"{marginal / TARGET_CPU_MS:.2f}x the target (fixed cost of a run: {fixed:.0f} CPU s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
