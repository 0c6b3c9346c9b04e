"""The device's two ceilings, measured first (as METHOD.md asks): device-to-device copy
bandwidth (bytes read + written per second) and the bf16 matrix-product rate on random
data (float32 on the CPU). The other groups' times read against these."""
from __future__ import annotations

import torch

from .common import Context, compare


def bench(ctx: Context) -> None:
    gib, n = ctx.pick((2.0, 8192), (2.0, 8192), (0.03125, 256))
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    src = torch.randn(int(gib * 2**30) // 4, device=ctx.device)
    dst = torch.empty_like(src)
    a, b = (torch.randn(n, n, device=ctx.device, dtype=dtype) for _ in range(2))
    repeats = ctx.pick(10, 5, 3)
    ms = compare({"copy": lambda: dst.copy_(src), "matmul": lambda: a @ b}, ctx.device, repeats, 5.0)
    ctx.row(what="device-to-device copy", size=f"{gib:g} GiB", ms=ms["copy"],
            rate=f"{2 * src.numel() * 4 / ms['copy'] / 1e6:.0f} GB/s")
    ctx.row(what=f"{str(dtype).split('.')[-1]} matmul", size=f"{n}^3", ms=ms["matmul"],
            rate=f"{2 * n ** 3 / ms['matmul'] / 1e9:.3g} TFLOP/s")
