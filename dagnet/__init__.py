"""dagnet: a declarative graph-spec compiler that produces trainable PyTorch models.

    >>> import dagnet
    >>> model = dagnet.compile("specs/lenet.yaml")
    >>> logits = model(image=torch.randn(8, 1, 28, 28))
"""

from dagnet.errors import Loc, SpecError, SpecErrors

__version__ = "0.1.0"
__all__ = ["compile", "load", "parse", "Loc", "SpecError", "SpecErrors", "__version__"]


def __getattr__(name: str):
    """``compile``, ``load`` and ``parse`` import the checker (sympy, networkx) on first use,
    so that ``dagnet --help`` and ``dagnet fmt`` (an editor's format-on-save) start at once."""
    if name in ("compile", "load", "parse"):
        from dagnet import api
        return getattr(api, name)
    raise AttributeError(f"module 'dagnet' has no attribute {name!r}")
