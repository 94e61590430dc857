"""Peak resident memory when the dataset is 10x larger: calorimeter file of N and 10 N events per class.

    PYTHONPATH=. python benchmarks/bench_memory.py [--events 2000] [--batches 100]

Each measurement is a fresh process: build the DataModule, validate and split the file, iterate
``--batches`` training batches (default loader settings), report its peak RSS (ru_maxrss). Rows
``peak_rss_10x/<lazy|memory>``: RSS(10 N) / RSS(N), goal <= 1.1x. The in-memory path holds the split
by design (data.max_memory_mb), so its growth is the split's size; the lazy path keeps at most the
decoded-chunk cache (lit_sr.data.base.LAZY_CACHE_BYTES) and one batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import ROOT, emit, peak_rss_mb, quick


def child(events: int, max_memory_mb: float, batches: int) -> None:
    import torch  # noqa: F401  (counted in the base RSS, as in a real run)

    from lit_sr.domains.calo.data import CaloDataModule

    dm = CaloDataModule(data_dir=str(ROOT / "data"), n_per_class=events, batch_size=64, max_memory_mb=max_memory_mb)
    dm.prepare_data()
    base = peak_rss_mb()
    dm.setup("fit")
    for i, _ in enumerate(dm.train_dataloader()):
        if i + 1 == batches:
            break
    print(json.dumps({"peak_mb": peak_rss_mb(), "before_setup_mb": base}))


def measure(events: int, max_memory_mb: float, batches: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(events), str(max_memory_mb), str(batches)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000 if quick() else 2000, help="events per class of the small file")
    ap.add_argument("--batches", type=int, default=50 if quick() else 100)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), float(args.child[1]), int(args.child[2]))
        return
    for mode, limit in (("lazy", 0.0), ("memory", 1e9)):
        small = measure(args.events, limit, args.batches)
        large = measure(10 * args.events, limit, args.batches)
        ratio = large["peak_mb"] / small["peak_mb"]
        emit(
            f"peak_rss_10x/{mode}",
            ratio,
            "x",
            "<= 1.1x",
            ratio <= 1.1,
            f"{small['peak_mb']:.0f} MiB at {args.events} events/class, {large['peak_mb']:.0f} MiB at "
            f"{10 * args.events}",
        )


if __name__ == "__main__":
    main()
