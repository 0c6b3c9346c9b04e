"""`dagnet train`, `eval` and `predict` for a spec: bind its inputs, losses and data to the loop.

A run directory keeps a copy of the spec (``spec.yaml`` or ``spec.dag``) and
the parameters it was compiled with (``spec.json``), so a run can be
evaluated, used for prediction or resumed without the original file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from dagnet import ops
from dagnet.loader import load
from dagnet.data import (DataError, Field, Standardized, check_example_shapes, check_labels, data_source,
                         load_dataset, prepare_data)
from dagnet.dims import known
from dagnet.emit import emit
from dagnet.check_train import resolve_losses
from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.ir import IR
from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.config import TrainConfig, resolve_config
from dagnet.train.distributed import decided_by_rank0
from dagnet.train.evaluate import evaluate, predict
from dagnet.train.loop import fit, seed_everything
from dagnet.train.metrics import infer_task
from dagnet.train.objective import ObjectiveError, build_objective
from dagnet.train.run import RunDir, RunDirError, resumed_spec, spec_files, stored_spec
from dagnet.train.sharding import restore_weights


def spec_losses(ir: IR) -> tuple[list[dict], list[str]]:
    """The spec's losses with node names resolved, and the node outputs they need.

    Raises SpecErrors naming every problem, located (the checks `dagnet check` runs)."""
    errors = ErrorLog()
    resolved = resolve_losses(ir, errors)
    errors.raise_if_any()
    return resolved


def task_of(ir: IR, losses: list[dict]):
    """The metrics' Task, told what a CRF node predicts (its potentials alone do not say):
    the op's ``task`` facet."""
    task = infer_task(losses)
    if task is not None and task.node is not None:
        opdef = ops.get(ir.node(task.node).op)
        if opdef is not None and opdef.task is not None:
            task = dataclasses.replace(task, kind=opdef.task)
    return task


def input_shapes(ir: IR) -> dict[str, tuple]:
    """What each example must hold: the spec's input shapes; a symbolic size (``T``) must
    agree across the inputs of one example, a size computed from one is free."""
    def dim(d):
        return int(d) if known(d) else (str(d) if getattr(d, "is_Symbol", False) else None)
    return {name: tuple(dim(d) for d in ir.node(name).shape) for name in ir.inputs}


def input_dtypes(ir: IR) -> dict:
    return {name: "float" if ir.node(name).dtype.startswith(("float", "bfloat")) else
            getattr(torch, ir.node(name).dtype) for name in ir.inputs}


def data_fields(ir: IR, losses: list[dict]) -> tuple[dict[str, Field], tuple[str, ...]]:
    """What the data must hold, told to the loaders of user files: the spec's inputs
    (shape, dtype) and the keys its losses read (targets and masks)."""
    dtypes = input_dtypes(ir)
    inputs = {name: Field(shape, dtype if dtype == "float" else str(dtype).removeprefix("torch."))
              for (name, shape), dtype in zip(input_shapes(ir).items(), dtypes.values())}
    targets = tuple(dict.fromkeys(loss[key] for loss in losses for key in ("target", "mask")
                                  if loss.get(key) and loss[key] not in inputs))
    return inputs, targets


def check_data(dataset, ir: IR, losses: list[dict], limit: int = 256) -> None:
    """Shapes and dtypes of the inputs (of the first `limit` examples), and class labels within the
    range the outputs score, token ids within the rows of the embedding that reads them (of every
    example: an index out of range would fail deep in a loss or a lookup)."""
    check_example_shapes(dataset, input_shapes(ir), dtypes=input_dtypes(ir), limit=limit)
    for node in ir.order():
        if node.op == "embedding" and node.inputs[0] in ir.inputs:
            rows = node.args["num_embeddings"]
            try:
                check_labels(dataset, node.inputs[0], (0, rows - 1))
            except DataError as error:
                raise DataError(f"{error}: `{node.name}` has {rows} rows; raise its num_embeddings to the "
                                "vocabulary's size, or the data's min_count to shrink it") from None
    for loss in losses:
        if loss.get("op") == "crf_nll" and ir.node(loss["node"]).op == "dependency_crf":
            _check_relations(dataset, ir, loss)
        if loss.get("op") != "cross_entropy":
            continue
        shape = ir.node(ir.outputs.get(loss["output"], loss["output"])).shape
        classes = shape[-1] if len(shape) == 2 else shape[0]      # [T, K] sequences, else [K, ...]
        if known(classes):
            check_labels(dataset, loss["target"], (0, int(classes) - 1), loss.get("ignore_index", -100))


def _check_relations(dataset, ir: IR, loss: dict) -> None:
    """A labelled parser's relation ids (a parsing data set's `relations`, read with its `arcs`) within
    the relations its scores hold: an id beyond them would give the gold tree no probability."""
    scores = ir.node(ir.node(loss["node"]).inputs[0]).shape
    if loss["target"] != "arcs" or len(scores) != 3 or not known(scores[-1]) or "relations" not in dataset[0]:
        return
    try:
        check_labels(dataset, "relations", (0, int(scores[-1]) - 1))
    except DataError as error:
        raise DataError(f"{error}: `{loss['node']}` scores {scores[-1]} relations; raise them to the data's "
                        "relation count (e.g. --set relations=N)") from None


def build_model(ir: IR, checkpoint: str | None = None):
    """The training module (the outputs the losses read) and its objective;
    ``checkpoint="blocks"`` recomputes each top-level block in the backward pass."""
    losses, needed = spec_losses(ir)
    if not losses:
        raise SpecError("the spec declares no loss to train", Loc(ir.file, 1, 1),
                        "add e.g. `loss: {op: cross_entropy, output: logits, target: label}`")
    model = emit(ir, outputs=needed, as_dict=True, checkpoint=checkpoint)
    try:
        objective = build_objective(losses, model)
    except ObjectiveError as exc:
        raise SpecError(f"loss: {exc}", ir.losses[0].get("_loc", Loc(ir.file))) from None
    return model, objective, losses


def train(spec, out, *, data=None, data_options=None, epochs=None, config_file=None, flags=(), params=None,
          resume: bool = False, progress: bool = True, weights=None) -> dict:
    """Train a spec; ``flags`` are ``key=value`` training overrides. Returns the run summary.

    ``data`` (a built-in name or a path) replaces the spec's data source, keeping its options
    when it is the same kind of source; ``data_options`` are set on top (see data_source).
    What the loader derived from the data (``dataset.preprocessing``: class names,
    vocabularies, ...) is saved in the checkpoints (``data_state``) and as data.json, so
    that eval and predict read new data the same way.

    ``weights`` (a weights file of any kind ``--weights`` reads) start a new run from trained
    weights: see :func:`start_from`.

    With ``resume`` the run's stored spec is trained; a ``spec`` or ``params`` given too
    must match it. Nothing is written into ``out`` until every check has passed; in a
    process group rank 0 decides for all whether ``out`` may be used, and writes it alone.
    """
    out = Path(out)
    decided_by_rank0(lambda: RunDir(out).check_start(resume))
    if resume:
        spec, params = resumed_spec(out, spec, params)
    ir = load(Path(spec), params, training=True)    # losses and `train:` errors, located
    flags = list(flags) + ([f"epochs={epochs}"] if epochs else [])
    if resume and (out / "config.yaml").exists():
        config = _resumed_config(out / "config.yaml", flags)
    else:
        config = resolve_config(ir.train, config_file, flags)
    seed_everything(config.seed)        # before the weights are initialised
    model, objective, losses = build_model(ir, None if config.checkpoint == "none" else config.checkpoint)
    if weights is not None and not resume:
        loaded = start_from(model, weights)
        if progress:
            print(loaded)
    if data is None and not config.data:
        raise SpecError("no data to train on", Loc(ir.file, 1, 1),
                        "give --data NAME|FILE or `train: {data: {name: digits}}` in the spec")
    config.data = data_source(data, data_options, config.data)
    inputs, targets = data_fields(ir, losses)
    saved = out / "data.json"
    split = prepare_data(config.data, val_split=config.val_split, seed=config.seed,
                         standardize=config.standardize, augment=config.augment, inputs=inputs, targets=targets,
                         preprocessing=json.loads(saved.read_text()) if resume and saved.exists() else None)
    for part in (split.train, split.val):
        if part is not None:
            check_data(part, ir, losses)
    files = None
    if not resume:
        files = spec_files(Path(spec), params)
        if split.preprocessing:
            files["data.json"] = (json.dumps(split.preprocessing, indent=2) + "\n").encode()
    return fit(model, objective, split.train, split.val, config, out, metrics=task_of(ir, losses),
               resume=resume, data_stats=split.stats, data_state=split.preprocessing, progress=progress,
               run_files=files)


def start_from(model: torch.nn.Module, path) -> str:
    """Load the tensors of a weights file that fit ``model`` by name and shape (fine-tuning: a new
    or resized head keeps its fresh initialisation); return a line saying what was loaded. A file
    none of whose tensors fits is a one-line CheckpointError."""
    from dagnet.train.checkpoint import CheckpointError
    from dagnet.weights import read_weights
    state, own = read_weights(path).state, model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fits:
        raise CheckpointError(f"{path}: none of its {len(state)} tensors fits the model by name and shape "
                              f"(the model has e.g. `{next(iter(own))}`); is it another model's?")
    model.load_state_dict(fits, strict=False)
    fresh = [k for k in own if k not in fits]
    resized = [k for k in fresh if k in state]
    line = f"started from {path}: {len(fits)} of {len(own)} tensors"
    if fresh:
        line += f"; fresh: {_some(fresh)}" + (f" (resized: {_some(resized)})" if resized else "")
    unused = [k for k in state if k not in own]
    return line + (f"; not in the model: {_some(unused)}" if unused else "")


def _some(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _resumed_config(path: Path, flags: list[str]) -> TrainConfig:
    """The settings a run was trained with (its config.yaml), overridden by flags."""
    try:
        return resolve_config(None, path, flags)
    except SpecError as error:          # read as a spec is: bad YAML, bytes or size, located
        where = f" (line {error.loc.line})" if error.loc.line > 0 else ""
        raise RunDirError(f"{path} is not valid YAML{where}: was it edited? dagnet writes it when a run "
                          "starts") from None


def restore(run_or_checkpoint) -> tuple:
    """The trained model, its losses and checkpoint state, from a run dir (best.pt, or last.pt
    if best.pt cannot be read) or a checkpoint file in one."""
    path = Path(run_or_checkpoint)
    run = path if path.is_dir() else path.parent
    spec, params = stored_spec(run)
    ir = load(spec, params)
    model, objective, losses = build_model(ir)
    ckpt, state = RunDir(run).load_state("best") if path.is_dir() else (path, load_checkpoint(path))
    restore_weights(model, None, state, ckpt)
    return ir, model.eval(), objective, losses, state


def _run_data(ir: IR, losses: list[dict], state: dict, data, options: dict | None, *, labelled: bool):
    """New data for a trained run, read as in training: the run's source options (when ``data``
    is the same kind of source), ``options`` on top, its preprocessing and its standardisation."""
    inputs, targets = data_fields(ir, losses)
    source = data_source(data, options, state["config"].get("data"))
    dataset = load_dataset(**source, inputs=inputs, targets=targets if labelled else (),
                           preprocessing=state.get("data_state") or None)
    if state.get("data_stats"):
        dataset = Standardized(dataset, state["data_stats"])
    check_example_shapes(dataset, input_shapes(ir), limit=256)
    return dataset


def evaluate_run(run_or_checkpoint, data=None, out: Path | None = None, data_options: dict | None = None,
                 device: str = "auto") -> dict:
    """Metrics of a trained model on ``data`` (read with the run's data options, ``data_options``
    on top), on ``device``; by default on the run's own validation split."""
    ir, model, objective, losses, state = restore(run_or_checkpoint)
    if data is None:            # the same seeded split, preprocessing and statistics as in training
        config = TrainConfig.from_dict(state["config"])     # checks that the training data is still there
        inputs, targets = data_fields(ir, losses)
        dataset = prepare_data(data_source(None, data_options, config.data), val_split=config.val_split,
                               seed=config.seed, standardize=config.standardize, inputs=inputs, targets=targets,
                               preprocessing=state.get("data_state") or None).val
        if dataset is None:
            raise DataError("the run kept no validation split (val_split: 0); give --data")
    else:
        dataset = _run_data(ir, losses, state, data, data_options, labelled=True)
        check_data(dataset, ir, losses)
    result = evaluate(model, dataset, task_of(ir, losses), objective=objective,
                      batch_size=state["config"]["batch_size"], device=device)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def predict_run(run_or_checkpoint, data, out, data_options: dict | None = None, device: str = "auto") -> Path:
    """Write predictions of a trained model for every example of ``data`` (read with the run's
    data options, ``data_options`` on top), on ``device``; classes are named as in training where
    the data gave names."""
    ir, model, _, losses, state = restore(run_or_checkpoint)
    task = task_of(ir, losses)
    if task is None:
        raise DataError("predict needs a classification, segmentation or sequence loss in the spec")
    dataset = _run_data(ir, losses, state, data, data_options, labelled=False)
    from dagnet.deploy import class_names
    names = class_names(state, task)        # an image folder's classes, a sequence file's tag set
    if task.kind == "parse":                # a parse names its relations (a treebank's DEPREL set)
        names = ((state.get("data_state") or {}).get("tags") or {}).get("relations")
    return predict(model, dataset, task, out, class_names=names, device=device)
