"""dagnet: a declarative graph-spec compiler that produces trainable PyTorch models.

    >>> import dagnet
    >>> model = dagnet.compile("specs/lenet.yaml")
    >>> logits = model(image=torch.randn(8, 1, 28, 28))
"""

from dagnet.api import compile, load, parse
from dagnet.errors import Loc, SpecError, SpecErrors

__version__ = "0.1.0"
__all__ = ["compile", "load", "parse", "Loc", "SpecError", "SpecErrors", "__version__"]
