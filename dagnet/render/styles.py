"""Themes: fonts, sizes and how each op family is drawn.

A family is told apart by two cues at once, the fill and the outline (square,
rounded, dashed, a 3-d box, an ellipse), so a figure still reads when printed
in greyscale: in the paper theme the fills of families that share an outline
differ in luminance by at least 0.15 (tests/test_render_styles.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Look:
    """How one kind of node is drawn (Graphviz attributes; TikZ follows the drawing)."""

    fill: str
    shape: str = "box"
    style: str = ""             # extra Graphviz styles: rounded, dashed, bold
    legend: str = ""            # the legend's words for it


@dataclass(frozen=True)
class Theme:
    name: str
    font: str                   # a family whose widths metrics.py knows (Times-Roman, Helvetica)
    title_size: float           # points
    detail_size: float
    cluster_size: float
    pen: float                  # line width, points
    edge_color: str
    skip_color: str             # residual and dense edges
    detail_color: str
    cluster_color: str
    nodesep: float              # inches, as Graphviz takes them
    ranksep: float
    size: tuple | None          # Graphviz `size` (scale down to fit a slide, inches) for TB and LR;
                                # None in the paper theme, whose text is never scaled
    looks: dict = field(default_factory=dict)
    tex_family: str = "\\rmfamily"
    column: float = 3.25        # inches: `--width column`, one column of a two-column paper
    page: float = 6.75          # inches: `--width page`, the text width (a figure*)
    min_size: float = 7.0       # points: text is never set smaller to make a figure fit

    def look(self, kind: str) -> Look:
        return self.looks.get(kind, self.looks["layer"])


# Paper: serif, small, greyscale-safe; never wider than `--width` (a column, 3.25 in, when it
# flows down; the text, 6.75 in, a figure*, when it flows across). A figure that does not
# fit is reflowed (narrow boxes, smaller titles down to 7 pt, left to right), never shrunk.
PAPER_LOOKS = {
    "dense": Look("#8074c2", legend="fully connected"),
    "conv": Look("#88b0e0", legend="convolution"),
    "upsample": Look("#a3d39c", legend="upsampling"),
    "pool": Look("#f7d9a8", legend="pooling"),
    "recurrent": Look("#6fc0b8", style="rounded", legend="recurrent"),
    "attention": Look("#fbe3d6", style="bold", legend="attention"),
    "norm": Look("#e9e9e9", style="rounded", legend="normalisation"),
    "learned": Look("#e0d090", style="rounded", legend="learned tensor"),
    "activation": Look("#ffffff", style="rounded", legend="activation"),
    "tensor": Look("#c4d4e8", style="dashed", legend="tensor operation"),
    "shape": Look("#ffffff", style="dashed", legend="reshape"),
    "merge": Look("#ffffff", shape="circle", legend="merge"),
    "crop": Look("#e9e9e9", style="dashed", legend="crop"),
    "field": Look("#dcc2e8", shape="ellipse", style="bold", legend="structured output (CRF)"),
    "block": Look("#eef2f8", shape="box3d", legend="block (collapsed)"),
    "input": Look("#ffffff", shape="parallelogram", legend="input"),
    "layer": Look("#ffffff", legend="layer"),
}

SLIDES_LOOKS = {
    "dense": Look("#c5b0d5", legend="fully connected"),
    "conv": Look("#aec7e8", legend="convolution"),
    "upsample": Look("#98df8a", legend="upsampling"),
    "pool": Look("#ffbb78", legend="pooling"),
    "recurrent": Look("#9edae5", style="rounded", legend="recurrent"),
    "attention": Look("#f7b6a0", style="bold", legend="attention"),
    "norm": Look("#dbdb8d", style="rounded", legend="normalisation"),
    "learned": Look("#e7cb94", style="rounded", legend="learned tensor"),
    "activation": Look("#ff9896", style="rounded", legend="activation"),
    "tensor": Look("#c6dbef", style="dashed", legend="tensor operation"),
    "shape": Look("#f7f7f7", style="dashed", legend="reshape"),
    "merge": Look("#ffffff", shape="circle", legend="merge"),
    "crop": Look("#f7f7f7", style="dashed", legend="crop"),
    "field": Look("#f7b6d2", shape="ellipse", style="bold", legend="structured output (CRF)"),
    "block": Look("#e8eef7", shape="box3d", legend="block (collapsed)"),
    "input": Look("#ffffff", shape="parallelogram", legend="input"),
    "layer": Look("#ffffff", legend="layer"),
}

# The graphical-model view: the usual notation (Bishop; Koller and Friedman).
MODEL_LOOKS = {
    "label": Look("#ffffff", shape="circle", legend="label"),
    "hidden": Look("#ffffff", shape="circle", style="dashed", legend="hidden state"),
    "deterministic": Look("#ffffff", shape="doublecircle", legend="deterministic"),
    "network": Look("#ffffff", shape="diamond", legend="network"),
    "factor": Look("#000000", shape="square", legend="factor"),
    "text": Look("none", shape="plaintext"),            # unfilled: never hides a line it sits on
    "legend-text": Look("none", shape="plaintext"),
    "plate": Look("none", shape="box", style="rounded", legend="plate"),
    "segment": Look("none", shape="box", style="rounded", legend="segment"),
}
PAPER_LOOKS.update(MODEL_LOOKS, observed=Look("#c8c8c8", shape="circle", legend="observed"))
SLIDES_LOOKS.update(MODEL_LOOKS, observed=Look("#b9c7d6", shape="circle", legend="observed"))

THEMES = {
    "paper": Theme("paper", "Times-Roman", 9, 7, 8, 0.6, "#000000", "#4d4d4d", "#404040",
                   "#8c8c8c", 0.14, 0.22, None, PAPER_LOOKS),
    "slides": Theme("slides", "Helvetica", 16, 12, 13, 1.2, "#333333", "#1f5fa8", "#555555",
                    "#9aa5b1", 0.25, 0.35, ("13.33,7.5", "13.33,7.5"), SLIDES_LOOKS, tex_family="\\sffamily",
                     column=13.33, page=13.33, min_size=12.0),
}
# Families as the legend lists them (the registry's order of importance to a reader).
FAMILY_ORDER = ("input", "conv", "pool", "upsample", "dense", "recurrent", "attention", "norm", "learned",
                "activation", "tensor", "shape", "crop", "merge", "field", "block")


def theme(name: str, **overrides) -> Theme:
    """A theme by name; keyword overrides replace fields (``theme("paper", title_size=10)``)."""
    if name not in THEMES:
        raise ValueError(f"unknown theme `{name}`; themes: {', '.join(THEMES)}")
    return replace(THEMES[name], **overrides) if overrides else THEMES[name]


def black_and_white(t: Theme) -> Theme:
    """Line art that needs no grey at all: observed variables bold instead of shaded."""
    looks = dict(t.looks, observed=Look("#ffffff", shape="circle", style="bold", legend="observed"))
    return replace(t, looks=looks)


def luminance(color: str) -> float:
    """Relative luminance (WCAG) of ``#rrggbb``: what a greyscale print keeps of a fill."""
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
