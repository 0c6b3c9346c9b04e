"""Dense CRF on the device: DeepLab's setting (21 labels, 5 mean-field iterations,
Potts, default kernels) on a batch of 512 x 512 scenes. Time per image of the
forward pass (inference) and of forward + backward (training), and how well the
device's lattice agrees with the CPU's on the same inputs (the same algorithm:
labels should match but for rounding near ties). Goal: < 33 ms per image.
"""
from __future__ import annotations

import time

import torch

from bench.bench_dense_crf import LABELS, ITERATIONS, deeplab_unary, synthetic_scenes
from dagnet.fields.dense_crf import DenseCRF

from .common import Context, compare

GOAL_MS = 33.0


def bench(ctx: Context) -> None:
    size, batch, compared = ctx.pick((512, 8, 8), (512, 8, 2), (24, 2, 2))
    repeats, seconds = ctx.pick((9, 15.0), (5, 6.0), (3, 1.0))
    image = synthetic_scenes(size, batch)
    logits = deeplab_unary(image)
    crf = DenseCRF(LABELS, iterations=ITERATIONS)
    on_device = DenseCRF(LABELS, iterations=ITERATIONS).to(ctx.device)
    x, rgb = logits.to(ctx.device), image.to(ctx.device)

    def forward():
        with torch.no_grad():
            return on_device(x, rgb)

    def forward_backward():
        on_device(x.detach().requires_grad_(), rgb).sum().backward()

    ms = compare({"fwd": forward, "fwd+bwd": forward_backward}, ctx.device, repeats, seconds)
    for what, t in ms.items():
        row = {"size": f"{size}x{size}", "batch": batch, "pass": what, "ms per batch": t,
               "ms per image": t / batch}
        if what == "fwd":
            row["goal"] = f"< {GOAL_MS:g} ms/image: {'met' if t / batch < GOAL_MS else 'missed'}"
        ctx.row(**row)

    started = time.perf_counter()
    with torch.no_grad():
        q_device = forward()[:compared].cpu()
        q_cpu = torch.cat([crf(logits[b:b + 1], image[b:b + 1]) for b in range(compared)])
    same = (q_device.argmax(1) == q_cpu.argmax(1)).float().mean()
    gap = (q_device.exp() - q_cpu.exp()).abs()
    ctx.row(**{"size": f"{size}x{size}", "batch": compared, "pass": "agreement with the CPU lattice",
               "same label": f"{100 * float(same):.3f}%", "mean |dQ|": float(gap.mean()),
               "max |dQ|": float(gap.max()), "cpu s per image": (time.perf_counter() - started) / compared})
