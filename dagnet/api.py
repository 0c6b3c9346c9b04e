"""``dagnet.compile``: the torch half of the library's entry points.

``parse`` and ``load`` live in the torch-free ``dagnet.loader`` (re-exported
here for callers that already have torch); anything that only reads, checks
or draws a spec imports that module, never this one.
"""

from __future__ import annotations

import torch.fx as fx

from dagnet.emit import emit
from dagnet.ir import IR
from dagnet.loader import load, parse

__all__ = ["compile", "load", "parse"]


def compile(spec, outputs: list[str] | None = None, as_dict: bool | None = None,
            overrides: dict | None = None, checkpoint: str | None = None,
            backward: str = "autograd", weights=None) -> fx.GraphModule:
    """Compile a spec (path, text, or checked IR) to a ``torch.fx.GraphModule``.

    ``checkpoint="blocks"`` recomputes every top-level block in the backward
    pass instead of storing its activations (parts marked ``checkpoint: true``
    in the spec always are). ``backward="messages"`` runs the backward pass
    with dagnet's explicit message-passing engine instead of autograd's
    (same gradients; see docs/backend.md for when each is faster).

    ``weights`` loads trained weights into the module: a path to any file
    ``dagnet compile --weights`` reads (a dagnet checkpoint, a ``.safetensors``
    file, a saved state dict; none of them unpickles code) or a state dict
    itself. Names and shapes must fit exactly; a file that does not is a
    one-line ``CheckpointError`` naming the first key that differs.
    """
    ir = spec if isinstance(spec, IR) else load(spec, overrides)
    module = emit(ir, outputs=outputs, as_dict=as_dict, checkpoint=checkpoint)
    if weights is not None:
        _load_weights(module, weights)
    if backward == "messages":
        from dagnet.backward import use_message_passing
        return use_message_passing(module)
    if backward != "autograd":
        raise ValueError(f"backward must be 'autograd' or 'messages', not {backward!r}")
    return module


def _load_weights(module: fx.GraphModule, weights) -> None:
    from dagnet.train.checkpoint import load_model_state
    from dagnet.weights import load_weights_file
    if isinstance(weights, dict):
        load_model_state(module, weights, "the state dict given")
    else:
        load_weights_file(module, weights)
