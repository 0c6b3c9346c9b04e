"""Benchmark dagnet's DenseCRF against pydensecrf (Krähenbühl's C++ lattice), on CPU.

    python bench/bench_dense_crf.py [--repeats 9] [--threads 2] [--skip-exact]

Setting: DeepLab's defaults (sxy 3 / weight 3, bilateral sxy 80 / srgb 13 /
weight 10, Potts), 21 labels, 5 mean-field iterations, crops of scikit-learn's
two sample photographs (synthetic scenes if scikit-learn is missing), and
DeepLab-like unaries: k-means colour segments, pooled by 8, noised and
upsampled bilinearly.

pydensecrf is a benchmark-only dependency, never a runtime or test one:
``pip install pydensecrf2==1.1`` builds it from source in about a minute.
Without it the pydensecrf columns are skipped, and the script says so.

Timing: every configuration runs once per round, rounds alternate, and the
table shows medians, so load from other processes hits all columns alike.
dagnet uses ``--threads`` torch threads; pydensecrf runs single-threaded, and
"2 procs" spreads the 4 images over a pool of two worker processes.  On a
machine whose cores are shared with other busy processes, GNU OpenMP's
spin-waiting threads can slow torch's 2-thread runs tenfold; run with
``OMP_WAIT_POLICY=PASSIVE`` there (the table header shows the setting).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from dagnet.data.synthetic import disc_scene
from dagnet.fields.dense_crf import DenseCRF, _exact_filter
from dagnet.fields.permutohedral import build_lattice, lattice_filter

LABELS, ITERATIONS = 21, 5
try:
    import pydensecrf.densecrf as dcrf
except ImportError:
    dcrf = None


def photographs(size: int, batch: int) -> torch.Tensor:
    """Four different size x size crops of the sample photographs, (B, 3, H, W) in 0-255."""
    from sklearn.datasets import load_sample_image
    spots = [("china.jpg", 20, 60), ("flower.jpg", 10, 40), ("china.jpg", 150, 300), ("flower.jpg", 60, 160)]
    crops = []
    for name, row, col in spots[:batch]:
        photo = torch.tensor(load_sample_image(name)).permute(2, 0, 1).float()
        crop = photo[:, row:row + 256, col:col + 256]
        crops.append(F.interpolate(crop[None], size=(size, size), mode="area")[0].round())
    return torch.stack(crops)


def synthetic_scenes(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Discs of flat colour plus noise: the stand-in when scikit-learn is absent."""
    g = torch.Generator().manual_seed(seed)
    images = [disc_scene(size, g)[0] for _ in range(batch)]
    return torch.stack(images).round()


def deeplab_unary(image: torch.Tensor, seed: int = 0, segments: int = 4) -> torch.Tensor:
    """Logits (B, L, H, W) of a blurry, noisy classifier of k-means colour segments."""
    g = torch.Generator().manual_seed(seed)
    batch, _, height, width = image.shape
    pixels = image.flatten(2)
    centres = pixels[:, :, torch.randint(0, height * width, (segments,), generator=g)]
    for _ in range(10):
        assign = torch.cdist(pixels.transpose(1, 2), centres.transpose(1, 2)).argmin(2)
        onehot = F.one_hot(assign, segments).float()
        centres = pixels @ onehot / onehot.sum(1, keepdim=True).clamp(min=1)
    label_ids = torch.stack([torch.randperm(LABELS, generator=g)[:segments] for _ in range(batch)])
    truth = torch.gather(label_ids, 1, assign).reshape(batch, height, width)
    coarse = F.avg_pool2d(4.0 * F.one_hot(truth, LABELS).permute(0, 3, 1, 2).float(), 8)
    coarse = coarse + torch.randn(coarse.shape, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def pydensecrf_marginals(logits: np.ndarray, image: np.ndarray) -> np.ndarray:
    """pydensecrf with the same model: Q (L, H, W) for logits (L, H, W), image (H, W, 3) uint8."""
    labels, height, width = logits.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    energy = -(logits - np.log(np.exp(logits - logits.max(0)).sum(0)) - logits.max(0))
    crf.setUnaryEnergy(np.ascontiguousarray(energy.reshape(labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    return np.array(crf.inference(ITERATIONS)).reshape(labels, height, width)


def _hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> contiguous (H, W, 3) uint8, as pydensecrf wants it."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy().astype(np.uint8))


_WORKER_DATA = None


def _init_worker(data):
    global _WORKER_DATA
    _WORKER_DATA = data


def _worker_run(index: int) -> np.ndarray:
    logits, image = _WORKER_DATA[index]
    return pydensecrf_marginals(logits, image)


def median_times(configs: dict, repeats: int) -> dict:
    """Alternating rounds over all configurations; median seconds of each."""
    for run in configs.values():
        run()
    samples = {name: [] for name in configs}
    for _ in range(repeats):
        for name, run in configs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def build_configs(inputs: dict, crf: DenseCRF, pool) -> dict:
    """One zero-argument callable per (size, batch, what) measured."""
    configs = {}
    for (size, batch), (logits, image) in inputs.items():
        def forward(logits=logits, image=image):
            with torch.no_grad():
                crf(logits, image)

        def forward_backward(logits=logits, image=image):
            crf(logits.detach().requires_grad_(), image).sum().backward()

        configs[(size, batch, "fwd")] = forward
        configs[(size, batch, "fwd+bwd")] = forward_backward
        if dcrf is not None and batch == 4:
            numpy_inputs = [(lg.numpy(), _hwc(im))
                            for lg, im in zip(logits, image)]
            configs[(size, batch, "pydensecrf")] = lambda xs=numpy_inputs: [pydensecrf_marginals(*x) for x in xs]
            if pool is not None:
                key = (size, batch)
                configs[(size, batch, "pydensecrf 2 procs")] = lambda key=key: pool[key].map(_worker_run, range(4))
    return configs


def agreement(inputs: dict, crf: DenseCRF) -> list[str]:
    """Label agreement of the lattice with pydensecrf at every size."""
    lines = []
    for (size, batch), (logits, image) in inputs.items():
        if dcrf is None or batch != 4:
            continue
        with torch.no_grad():
            ours = crf(logits, image).argmax(1)
        theirs = torch.stack([torch.from_numpy(pydensecrf_marginals(lg.numpy(), _hwc(im)))
                              for lg, im in zip(logits, image)]).argmax(1)
        lines.append(f"- {size}x{size}: same label as pydensecrf on {100 * (ours == theirs).float().mean():.3f}% of pixels")
    return lines


def exact_comparison(make_images, label: str) -> str:
    """Lattice (and pydensecrf's lattice) against explicit kernels at 128x128, image by image (1 GB kernels)."""
    image = make_images(128, 4)
    logits = deeplab_unary(image)
    lattice, exact = DenseCRF(LABELS), DenseCRF(LABELS, method="exact")
    same, gaps, changed, theirs = [], [], [], []
    with torch.no_grad():
        for b in range(image.shape[0]):
            q_lat, q_ex = lattice(logits[b:b + 1], image[b:b + 1]).exp(), exact(logits[b:b + 1], image[b:b + 1]).exp()
            same.append((q_lat.argmax(1) == q_ex.argmax(1)).float().mean())
            gaps.append((q_lat - q_ex).abs().mean())
            changed.append((q_ex.argmax(1) != logits[b:b + 1].argmax(1)).float().mean())
            if dcrf is not None:
                q_ref = torch.from_numpy(pydensecrf_marginals(logits[b].numpy(), _hwc(image[b])))
                theirs.append((q_ref.argmax(0) == q_ex[0].argmax(0)).float().mean())
    line = (f"- {label}, 128x128: lattice = exact on {100 * torch.stack(same).mean():.2f}% of pixels, "
            f"mean |dQ| {torch.stack(gaps).mean():.2e} (the CRF changes {100 * torch.stack(changed).mean():.1f}% "
            "of labels)")
    if theirs:
        line += f"; pydensecrf = exact on {100 * torch.stack(theirs).mean():.2f}%"
    return line


def filter_errors(make_images, label: str) -> str:
    """Relative error |lattice - exact| / |exact| of one kernel product Kn Q, per kernel."""
    image = make_images(128, 2)
    logits = deeplab_unary(image)
    crf = DenseCRF(LABELS)
    errors = {"spatial": [], "bilateral": []}
    with torch.no_grad():
        for b in range(image.shape[0]):
            spatial, bilateral = crf.kernel_features(image[b:b + 1])
            q = logits[b].flatten(1).t().softmax(-1)                    # (P, L)
            for name, features in (("spatial", spatial[0]), ("bilateral", bilateral[0])):
                exact = _exact_filter(features[None])(q[None], torch.eye(LABELS))[0]
                approx = lattice_filter(q, build_lattice(features))
                errors[name].append(float((approx - exact).norm() / exact.norm()))
    return (f"- {label}, 128x128, one filtering of Q: relative error of the lattice "
            + ", ".join(f"{k} {100 * min(v):.1f}-{100 * max(v):.1f}%" for k, v in errors.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet-load", type=float, default=None,
                        help="on a shared machine, wait (up to 30 min) for the 1-min load average to drop below this")
    parser.add_argument("--no-procs", action="store_true", help="skip the two-process pydensecrf column")
    parser.add_argument("--skip-exact", action="store_true", help="skip the 128x128 exact comparison (~4 GB, slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        make_images, source = photographs, "sample photographs"
        make_images(8, 1)
    except ImportError:
        make_images, source = synthetic_scenes, "synthetic scenes (scikit-learn missing)"
    print(f"# DenseCRF benchmark: {source}, {LABELS} labels, {ITERATIONS} iterations, "
          f"{args.threads} torch threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
          f"medians of {args.repeats} alternating rounds\n")
    if dcrf is None:
        print("pydensecrf is not installed (`pip install pydensecrf2==1.1`): its columns are skipped.\n")
    inputs = {}
    for size in (128, 256):
        images = make_images(size, 4)
        logits = deeplab_unary(images)
        inputs[(size, 1)] = (logits[:1], images[:1])
        inputs[(size, 4)] = (logits, images)
    crf = DenseCRF(LABELS)
    pools = {}
    if dcrf is not None and not args.no_procs:
        for size in (128, 256):
            logits, images = inputs[(size, 4)]
            data = [(lg.numpy(), _hwc(im)) for lg, im in zip(logits, images)]
            pools[(size, 4)] = multiprocessing.get_context("fork").Pool(2, _init_worker, (data,))
    if args.quiet_load is not None:
        wait_for_quiet(args.quiet_load, patience=1800)
    load_before = os.getloadavg()[0]
    times = median_times(build_configs(inputs, crf, pools or None), args.repeats)
    print(format_table(times))
    print(f"\n1-min load average {load_before:.1f} before timing, {os.getloadavg()[0]:.1f} after "
          f"(the machine's 2 cores are shared; load above ~1 slows the 2-thread column most).")
    print("\nAgreement:")
    for line in agreement(inputs, crf):
        print(line)
    if not args.skip_exact:
        print(exact_comparison(make_images, source))
        print(exact_comparison(synthetic_scenes, "synthetic scenes"))
        print(filter_errors(make_images, source))
    for pool in pools.values():
        pool.close()


def wait_for_quiet(limit: float, patience: float) -> None:
    """Start when the 1-minute load average is under ``limit``, or after ``patience`` seconds."""
    deadline = time.time() + patience
    while os.getloadavg()[0] > limit and time.time() < deadline:
        time.sleep(10)


def format_table(times: dict) -> str:
    """Markdown table, ms per image, with the ratios the issue asks for."""
    rows = ["| size | batch | fwd ms/img | fwd+bwd ms/img | (fwd+bwd)/fwd | pydensecrf 1 thread ms/img "
            "| pydensecrf 2 procs ms/img | fwd / pydensecrf 1 thread | fwd / pydensecrf 2 procs |",
            "|---|---|---|---|---|---|---|---|---|"]
    for size in (128, 256):
        for batch in (1, 4):
            fwd, fb = times[(size, batch, "fwd")] / batch, times[(size, batch, "fwd+bwd")] / batch
            ref1 = times.get((size, 4, "pydensecrf"), float("nan")) / 4
            ref2 = times.get((size, 4, "pydensecrf 2 procs"), float("nan")) / 4
            rows.append(f"| {size}x{size} | {batch} | {1e3 * fwd:.1f} | {1e3 * fb:.1f} | {fb / fwd:.2f} | "
                        f"{1e3 * ref1:.1f} | {1e3 * ref2:.1f} | {fwd / ref1:.2f} | {fwd / ref2:.2f} |")
    scale = times[(256, 4, "fwd")] / times[(128, 4, "fwd")]
    per_image = (times[(128, 4, "fwd")] / 4) / times[(128, 1, "fwd")]
    rows.append(f"\n256x256 / 128x128 (batch 4, fwd): {scale:.2f}x; "
                f"batch 4 per image / batch 1 (128x128, fwd): {per_image:.2f}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
