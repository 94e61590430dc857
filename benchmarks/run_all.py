"""Run every benchmark, print one table, write benchmarks/results/<host>-<date>.json.

    make bench            # or: PYTHONPATH=. python benchmarks/run_all.py
    make bench QUICK=1    # smaller sizes: under 5 minutes on 2 idle cores

Each script runs in its own process (clean memory figures, no state shared) and reports its results
as BENCH lines (benchmarks/common.py). Rows with a goal say whether it is met; GPU rows are skipped
with a message on a machine without CUDA.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = [
    "bench_training.py",
    "bench_pipeline.py",
    "bench_precision.py",
    "bench_memory.py",
    "bench_blend.py",
    "bench_simulators.py",
    "bench_gpu.py",
]


def run(script: str) -> tuple[list[dict], float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script)], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    rows = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    error = "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-1500:]
    return rows, seconds, error


def main() -> None:
    quick = os.environ.get("QUICK", "") not in ("", "0")
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    all_rows: list[dict] = []
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        rows, seconds, error = run(script)
        for r in rows:
            r["script"] = script
        all_rows += rows
        if error:
            print(f"{script} failed after {seconds:.0f} s:\n{error}", flush=True)
            all_rows.append(
                {
                    "name": script,
                    "value": None,
                    "unit": "",
                    "goal": "",
                    "ok": False,
                    "detail": "failed: " + error.strip().splitlines()[-1][:200],
                    "script": script,
                }
            )
        else:
            print(f"   {len(rows)} results in {seconds:.0f} s", flush=True)
    width = max(len(r["name"]) for r in all_rows)
    print(f"\n{'benchmark':{width}}  {'value':>12}  {'goal':>9}  met")
    for r in all_rows:
        value = "skipped" if r["value"] is None else f"{r['value']:.3g} {r['unit']}"
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        print(f"{r['name']:{width}}  {value:>12}  {r['goal']:>9}  {met:3}  {r['detail']}")
    import torch

    meta = {
        "host": socket.gethostname(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = HERE / "results" / f"{meta['host']}-{dt.date.today().isoformat()}{'-quick' if quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": all_rows}, indent=1))
    print(f"\n{len(all_rows)} rows in {meta['seconds']:.0f} s (load average at start {load:.1f}) -> {out}")


if __name__ == "__main__":
    main()
