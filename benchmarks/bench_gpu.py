"""GPU fast path (skipped with a message on a machine without CUDA): training step rate of the
calorimeter study generator in fp32 vs bf16-mixed + channels_last (+ torch.compile), and inference
images/s.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--batch 64] [--steps 50]

Rows ``gpu/bf16_channels_last_speedup`` (goal >= 2x), ``gpu/bf16_compile_speedup``, ``gpu/inference``.
"""

from __future__ import annotations

import argparse
import time

import torch  # noqa: E402
from common import emit


def step_rate(net, x, y, steps: int, autocast: bool) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        for name in ("gpu/bf16_channels_last_speedup", "gpu/bf16_compile_speedup", "gpu/inference"):
            emit(name, None, "", ">= 2x" if "speedup" in name else "", None, "skipped: no CUDA device on this machine")
        return
    from lit_sr.domains.calo.nets import calo_generator

    def net():
        torch.manual_seed(0)
        return calo_generator(num_blocks=5, input_skip=True).cuda()

    x = torch.rand(args.batch, 1, 6, 6, device="cuda")
    y = torch.rand(args.batch, 1, 24, 24, device="cuda")
    fp32 = step_rate(net(), x, y, args.steps, autocast=False)
    n = net().to(memory_format=torch.channels_last)
    fast = step_rate(
        n,
        x.contiguous(memory_format=torch.channels_last),
        y.contiguous(memory_format=torch.channels_last),
        args.steps,
        autocast=True,
    )
    emit(
        "gpu/bf16_channels_last_speedup",
        fast / fp32,
        "x",
        ">= 2x",
        fast / fp32 >= 2.0,
        f"fp32 {fp32:.1f} steps/s, bf16 + channels_last {fast:.1f} steps/s, batch {args.batch}",
    )
    compiled = net().to(memory_format=torch.channels_last)
    compiled.compile()
    comp = step_rate(
        compiled,
        x.contiguous(memory_format=torch.channels_last),
        y.contiguous(memory_format=torch.channels_last),
        args.steps,
        autocast=True,
    )
    emit("gpu/bf16_compile_speedup", comp / fp32, "x", ">= 2x", comp / fp32 >= 2.0, f"{comp:.1f} steps/s")
    n.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(5):
            n(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.steps):
            n(x)
        torch.cuda.synchronize()
    emit("gpu/inference", args.steps * args.batch / (time.perf_counter() - t), "images/s", detail="bf16, channels_last")


if __name__ == "__main__":
    main()
