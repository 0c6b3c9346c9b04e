"""Render the gallery of example figures: ``python -m dagnet.render.gallery [--out docs/gallery]``.

Uses graphviz-pure, so the files are the same bytes on every machine. Every
``.svg`` comes with a ``.pdf`` of the same figure (the direct route, fonts
embedded), which is what a paper includes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (spec, output file, options)
FIGURES = [
    ("resnet50", "resnet50.svg", {}),
    ("resnet50", "resnet50_depth1.svg", {"depth": 1}),
    ("resnet18", "resnet18_depth2.svg", {"depth": 2}),
    ("resnet18", "resnet18_depth2.tex", {"depth": 2}),
    ("resnet18", "resnet18_slides_lr.svg", {"theme": "slides", "rankdir": "LR", "depth": 1}),
    ("densenet121", "densenet121.svg", {}),
    ("vgg16", "vgg16_224.svg", {"dims": {"H": 224, "W": 224}}),
    ("unet", "unet_depth1.svg", {"depth": 1}),
    ("fcn8s", "fcn8s.svg", {}),
    ("lenet", "lenet_expanded.svg", {"expand": True}),
    ("mlp", "mlp.svg", {}),
    ("cnf_tagger", "cnf_tagger.svg", {}),
    ("cnf_tagger", "cnf_tagger.tex", {}),
    ("cnf_tagger", "cnf_tagger_arch.svg", {"view": "arch", "depth": 1}),
    ("hcrf_gestures", "hcrf_gestures.svg", {}),
    ("ldcrf_gestures", "ldcrf_gestures.svg", {}),
    ("grid_segmenter", "grid_segmenter.svg", {}),
    ("fcn_densecrf", "fcn_densecrf.svg", {}),
    ("fcn_densecrf", "fcn_densecrf_bw.svg", {"bw": True}),
    ("bert_crf_tagger", "bert_crf_tagger.svg", {}),
    ("bert_crf_tagger", "bert_crf_tagger_arch.svg", {"view": "arch", "depth": 1}),
    ("conll_tagger", "conll_tagger.svg", {}),
    ("conll_tagger", "conll_tagger_arch.svg", {"view": "arch", "depth": 1}),
    ("conll_softmax_tagger", "conll_softmax_tagger.svg", {}),
    # structures with a drawing of their own: segments over frames, arcs over a sentence
    ("semimarkov_gestures", "semimarkov_gestures.svg", {}),
    ("biaffine_parser", "biaffine_parser.svg", {}),
    # torchvision's families and the Transformers (docs/models.md)
    # the model zoo (docs/models.md)
    *[(spec, f"{spec}.svg", {}) for spec in (
        "mlp_mse", "mlp_regularised", "resnet_digits", "densenet_digits", "colorise_photos", "localise_shapes",
        "deconvnet_shapes", "fcn8s_shapes", "fcn16s_shapes", "fcn32s_shapes", "segmenter_full",
        "segmenter_points", "softmax_gestures", "cnf_gestures", "ldcnf_gestures", "deeplab_shapes")],
    *[(spec, f"{spec}_arch.svg", {"view": "arch"}) for spec in ("cnf_gestures", "ldcnf_gestures", "deeplab_shapes")],
    *[(spec, f"{spec}.svg", {}) for spec in (
        "squeezenet", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3", "mnasnet", "efficientnet",
        "efficientnet_v2", "shufflenet_v2", "regnet", "convnext", "vit", "swin", "bert", "gpt2")],
]


def main(argv: list[str] | None = None) -> int:
    import dagnet
    from dagnet.render import render

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    args = parser.parse_args(argv)
    os.environ.pop("SOURCE_DATE_EPOCH", None)          # no date in the committed PDFs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec, name, options in FIGURES:
        path = ROOT / "specs" / f"{spec}.yaml"
        if not path.exists():
            print(f"skip {name}: no {path.name}")
            continue
        start = time.perf_counter()
        ir = dagnet.load(path)
        render(ir, out / name, engine="graphviz-pure", **options)
        if name.endswith(".svg"):
            render(ir, out / name.replace(".svg", ".pdf"), engine="graphviz-pure", **options)
        print(f"{name:32s} {time.perf_counter() - start:6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
