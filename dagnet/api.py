"""The library entry points: ``dagnet.load`` and ``dagnet.compile``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dagnet.check import check
from dagnet.errors import ErrorLog, SpecError
from dagnet.ir import IR, expand
from dagnet.spec.frontends import load_spec

if TYPE_CHECKING:
    import torch.fx as fx


def parse(source):
    """Parse a spec (path or text) with the front end its suffix names (text given directly is YAML)."""
    return load_spec(source)


def load(source, overrides: dict | None = None, training: bool = False) -> IR:
    """Parse, expand and check a spec; return the checked IR (shapes filled in).

    ``source`` is a path (``.yaml``/``.yml``/``.dag``) or spec text;
    ``overrides`` sets parameters like the CLI's ``--set k=v``. With
    ``training`` the losses and the ``train:`` section are checked too, and
    their errors are raised together with the graph's, in file order.
    """
    spec = parse(Path(source) if isinstance(source, Path) else source)
    errors = ErrorLog()
    ir = expand(spec, overrides, errors)
    try:
        check(ir, errors)
    except SpecError:
        if not training:
            raise
    if training:
        from dagnet.check_train import check_training
        check_training(ir, errors)
        errors.raise_if_any()
    return ir


def compile(spec, outputs: list[str] | None = None, as_dict: bool | None = None,
            overrides: dict | None = None, checkpoint: str | None = None,
            backward: str = "autograd") -> fx.GraphModule:
    """Compile a spec (path, text, or checked IR) to a ``torch.fx.GraphModule``.

    ``checkpoint="blocks"`` recomputes every top-level block in the backward
    pass instead of storing its activations (parts marked ``checkpoint: true``
    in the spec always are). ``backward="messages"`` runs the backward pass
    with dagnet's explicit message-passing engine instead of autograd's
    (same gradients; see docs/backend.md for when each is faster).
    """
    from dagnet.emit import emit    # torch is imported here, not by reading or checking a spec
    ir = spec if isinstance(spec, IR) else load(spec, overrides)
    module = emit(ir, outputs=outputs, as_dict=as_dict, checkpoint=checkpoint)
    if backward == "messages":
        from dagnet.backward import use_message_passing
        return use_message_passing(module)
    if backward != "autograd":
        raise ValueError(f"backward must be 'autograd' or 'messages', not {backward!r}")
    return module
