"""dagnet: a declarative graph-spec compiler that produces trainable PyTorch models.

    >>> import dagnet
    >>> model = dagnet.compile("specs/lenet.yaml")
    >>> logits = model(image=torch.randn(8, 1, 28, 28))
"""

from dagnet.errors import Loc, SpecError, SpecErrors

__version__ = "0.1.0"
__all__ = ["compile", "import_model", "load", "parse", "Loc", "SpecError", "SpecErrors", "__version__"]


def __getattr__(name: str):
    """``load`` and ``parse`` import the checker (sympy, networkx) on first use, and
    ``compile`` the emitter (torch) too, so that ``dagnet --help`` and ``dagnet fmt``
    (an editor's format-on-save) start at once."""
    if name in ("load", "parse"):
        from dagnet import loader
        return getattr(loader, name)
    if name == "compile":
        from dagnet import api
        return api.compile
    if name == "import_model":
        from dagnet.importer.imported import import_model
        return import_model
    raise AttributeError(f"module 'dagnet' has no attribute {name!r}")
