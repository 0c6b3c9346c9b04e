"""A trained model as it is deployed: its weights, the input standardisation it trained
with, and the labels ``dagnet predict`` would write, computed by the model itself.

A run trained with ``standardize: true`` saw inputs standardised with per-channel
statistics of its training data (kept in its checkpoints as ``data_stats``). The
exported model applies them itself, so every format takes raw inputs. And a user of
an exported classifier or tagger wants its decisions, not only its scores: the
exported model also outputs ``labels``, exactly what ``dagnet predict`` writes (the
argmax over the classes, or a structured node's decode). Both live in one small
``torch.fx`` wrapper (:func:`deployed`) around the compiled module.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path

import torch
from torch import fx

from dagnet.export import ExportError
from dagnet.ir import IR

LABELS = "labels"           # the name of the predicted labels among the exported outputs


def deployed(module: fx.GraphModule, stats: dict | None = None, task=None) -> fx.GraphModule:
    """`module` behind a per-channel standardisation of the inputs `stats` names ({input: {mean, std}}),
    and with a `task` (dagnet.train.metrics.Task) its predicted labels as one more output.

    The wrapper takes the same named inputs; its buffers are ``standardize_<input>_mean``
    and ``_std``; the model's weights are under ``model.``. Without a task it returns what
    `module` returns. With one, `module` must return a dict holding the task's scores,
    and the wrapper returns ``{<each spec output>: ..., "labels": ...}``: the labels are
    ``scores.argmax(class dim)``, or for a structured node ``model.<node>.decode(scores,
    mask)[0]``, called as a method of whatever module sits there when it is exported.
    """
    ir: IR = module.dagnet_ir
    stats = stats or {}
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
    result = graph.call_module("model", kwargs=args)
    if task is not None:
        if LABELS in ir.outputs:
            raise ExportError(f"the spec has an output named `{LABELS}`, the name of the predicted labels in "
                              "an export: rename that output")
        outputs = {name: graph.call_function(operator.getitem, (result, name)) for name in ir.outputs}
        outputs[LABELS] = _labels(graph, ir, task, graph.call_function(operator.getitem, (result, task.output)),
                                  args)
        result = outputs
    graph.output(result)
    wrapper = fx.GraphModule(root, graph, class_name=type(module).__name__)
    wrapper.dagnet_ir = ir
    wrapper.dagnet_deploy = {"standardize": stats, "labels": task is not None}
    return wrapper


def _labels(graph: fx.Graph, ir: IR, task, scores: fx.Node, inputs: dict) -> fx.Node:
    """The graph nodes of Task.predict: an argmax, or the structured node's decode."""
    if task.node is None:
        rank = 1 + len(ir.node(ir.outputs.get(task.output, task.output)).shape)
        # the class dim by the rule `dagnet predict` applies, read off a tensor of the scores' rank
        dim = task.class_dim(torch.empty((1,) * rank, device="meta"))
        return graph.call_method("argmax", (scores, dim))
    mask = None
    if task.mask is not None:
        if task.mask not in ir.inputs:
            raise ExportError(f"the labels of `{task.node}` need the mask `{task.mask}`, which is not an input "
                              "of the model")
        mask = inputs[task.mask]
    decoded = graph.call_method("decode", (graph.get_attr(f"model.{task.node}"), scores, mask))
    return graph.call_function(operator.getitem, (decoded, 0))


def _stats_shape(rank: int) -> list[int]:
    """Broadcast shape of the statistics over a batch of inputs of this (per-example) rank."""
    from dagnet.data.transforms import channel_dim
    axis = 1 + channel_dim(rank)             # the batch comes first
    return [-1 if d == axis else 1 for d in range(rank + 1)]


def prediction_task(ir: IR):
    """The Task whose labels `dagnet predict` writes for this spec, or None (no classification-like loss)."""
    from dagnet.train.from_spec import spec_losses, task_of
    return task_of(ir, spec_losses(ir)[0])


def emit_scoring(ir: IR, task):
    """The compiled spec; with a task, returning a dict of the spec's outputs and the task's scores."""
    from dagnet.emit import emit
    return emit(ir) if task is None else emit(ir, outputs=[*ir.outputs, task.output], as_dict=True)


def class_names(state: dict, task) -> list[str] | None:
    """The names of the classes the task predicts, if the checkpoint's data layer kept them:
    ``data_state["class_names"][target]`` (tables, image folders) or ``data_state["tags"][target]``
    (sequence files' tag sets); a plain list is taken as it is."""
    data_state = state.get("data_state") or {}
    for key in ("class_names", "tags"):
        names = data_state.get(key)
        if isinstance(names, dict):
            names = names.get(task.target) if task is not None else None
        if names:
            return [str(n) for n in names]
    return None


def with_weights(module: fx.GraphModule, path) -> tuple[fx.GraphModule, dict]:
    """Load any weights file into `module`; wrap it in the run's standardisation if the file has one."""
    from dagnet.weights import load_weights_file
    stats = load_weights_file(module, path).stats
    return (deployed(module, stats) if stats else module), stats


def export_run(run, output, dims: dict | None = None) -> tuple[str, dict]:
    """Export a run directory's best model (best.pt, or last.pt if that cannot be read) with its
    preprocessing and predicted labels; return the format and what was baked in:
    {"standardize": stats, "labels": the node or output they come from, "class_names": [...]}."""
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
    path, state = RunDir(run).load_state("best")
    stats = state.get("data_stats") or {}
    ir = load(spec, params)
    task = prediction_task(ir)
    names = class_names(state, task)
    module = emit_scoring(ir, task)
    load_model_state(module, model_weights(state, path), path)
    if task is not None or stats:
        module = deployed(module, stats, task)
    metadata = {"dagnet.class_names": json.dumps(names)} if names else None
    baked = {"standardize": stats, "labels": task and (task.node or task.output), "class_names": names}
    return export(module, output, dims, metadata=metadata), baked
