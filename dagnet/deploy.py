"""A trained model as it is deployed: its weights and the input standardisation it trained with.

A run trained with ``standardize: true`` saw inputs standardised with per-channel
statistics of its training data (kept in its checkpoints as ``data_stats``). The
exported model applies them itself: :func:`standardized` wraps the compiled
module in a small ``torch.fx`` module that computes ``(x - mean) / std`` from
buffers before calling it, so every format takes raw inputs.
"""

from __future__ import annotations

import operator
from pathlib import Path

import torch
from torch import fx

from dagnet.export import ExportError
from dagnet.ir import IR


def standardized(module: fx.GraphModule, stats: dict) -> fx.GraphModule:
    """`module` behind a per-channel standardisation of the inputs `stats` names ({input: {mean, std}}).

    The wrapper has the same named inputs and outputs; its buffers are
    ``standardize_<input>_mean`` and ``_std``; the model's weights are under ``model.``.
    """
    ir: IR = module.dagnet_ir
    root, graph, args = torch.nn.Module(), fx.Graph(), {}
    root.model = module
    for name in ir.inputs:
        x = graph.placeholder(name)
        if name in stats:
            shape = _stats_shape(len(ir.node(name).shape))
            for moment in ("mean", "std"):
                root.register_buffer(f"standardize_{name}_{moment}",
                                     torch.tensor(stats[name][moment], dtype=torch.float32).view(shape))
            x = graph.call_function(operator.sub, (x, graph.get_attr(f"standardize_{name}_mean")))
            x = graph.call_function(operator.truediv, (x, graph.get_attr(f"standardize_{name}_std")))
        args[name] = x
    graph.output(graph.call_module("model", kwargs=args))
    wrapper = fx.GraphModule(root, graph, class_name=type(module).__name__)
    wrapper.dagnet_ir, wrapper.dagnet_standardize = ir, stats
    return wrapper


def _stats_shape(rank: int) -> list[int]:
    """Broadcast shape of the statistics over a batch of inputs of this (per-example) rank."""
    from dagnet.data.transforms import channel_dim
    axis = 1 + channel_dim(rank)             # the batch comes first
    return [-1 if d == axis else 1 for d in range(rank + 1)]


def with_weights(module: fx.GraphModule, path) -> tuple[fx.GraphModule, dict]:
    """Load any weights file into `module`; wrap it in the run's standardisation if the file has one."""
    from dagnet.weights import load_weights_file
    stats = load_weights_file(module, path).stats
    return (standardized(module, stats) if stats else module), stats


def export_run(run, output, dims: dict | None = None) -> tuple[str, dict]:
    """Export a run directory's best model (best.pt, or last.pt if that cannot be read) with its
    preprocessing; return the format and the standardisation statistics baked in."""
    from dagnet.emit import emit
    from dagnet.export import FORMATS, export
    from dagnet.loader import load
    from dagnet.train.checkpoint import load_model_state
    from dagnet.train.run import RunDir, stored_spec
    from dagnet.train.sharding import model_weights
    run = Path(run)
    if Path(output).suffix not in FORMATS:
        raise ExportError(f"cannot export {run} to {output}: use one of {', '.join(FORMATS)} (a .py file "
                          "would hold the code without the trained weights)")
    spec, params = stored_spec(run)
    module = emit(load(spec, params))
    path, state = RunDir(run).load_state("best")
    load_model_state(module, model_weights(state, path), path)
    stats = state.get("data_stats") or {}
    return export(standardized(module, stats) if stats else module, output, dims), stats
