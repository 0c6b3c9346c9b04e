"""Figures of a model graph, ready for a paper: ``dagnet render`` and :func:`render`.

    >>> import dagnet, dagnet.render
    >>> ir = dagnet.load("specs/resnet50.yaml")
    >>> dagnet.render.render(ir, "resnet50.svg")                 # collapsed blocks
    >>> dagnet.render.render(ir, "resnet50.tex", depth=2)        # TikZ, LaTeX sets the text

The pipeline: IR -> Figure (arch.py: layers and collapsed blocks; pgm.py: the
graphical model of the CRFs) -> DOT (dot.py) -> Graphviz's layout, run as a
subprocess (layout.py) -> svg / png / pdf / json, or TikZ replayed from the
layout (tikz.py).
"""

# The pipeline (and with it the IR, the op registry and sympy) loads on first
# use, so that the `dagnet` command registers `render` without paying for it.
_PIPELINE = ("render", "figure", "dot_source", "tikz_source", "RenderError", "FORMATS", "VIEWS")
__all__ = list(_PIPELINE)


def __getattr__(name: str):
    if name in _PIPELINE:
        from dagnet.render import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'dagnet.render' has no attribute {name!r}")
