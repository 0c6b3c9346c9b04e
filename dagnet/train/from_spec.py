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
from dagnet.data import DataError, Standardized, check_example_shapes, check_labels, load_dataset, prepare_data
from dagnet.dims import known
from dagnet.emit import emit
from dagnet.check_train import resolve_losses
from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.ir import IR
from dagnet.train.checkpoint import load_checkpoint, load_model_state
from dagnet.train.config import TrainConfig, resolve_config
from dagnet.train.evaluate import evaluate, predict
from dagnet.train.loop import fit, seed_everything
from dagnet.train.metrics import infer_task
from dagnet.train.objective import ObjectiveError, build_objective
from dagnet.train.run import RunDir, RunDirError, resumed_spec, spec_files, stored_spec


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


def check_data(dataset, ir: IR, losses: list[dict], limit: int = 256) -> None:
    """Shapes and dtypes of the inputs (of the first `limit` examples), and class labels within the
    range the outputs score (of every example: a label out of range would fail deep in a loss)."""
    check_example_shapes(dataset, input_shapes(ir), dtypes=input_dtypes(ir), limit=limit)
    for loss in losses:
        if loss.get("op") != "cross_entropy":
            continue
        shape = ir.node(ir.outputs.get(loss["output"], loss["output"])).shape
        classes = shape[-1] if len(shape) == 2 else shape[0]      # [T, K] sequences, else [K, ...]
        if known(classes):
            check_labels(dataset, loss["target"], (0, int(classes) - 1), loss.get("ignore_index", -100))


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


def train(spec, out, *, data=None, epochs=None, config_file=None, flags=(), params=None,
          resume: bool = False, progress: bool = True) -> dict:
    """Train a spec; ``flags`` are ``key=value`` training overrides. Returns the run summary.

    With ``resume`` the run's stored spec is trained; a ``spec`` or ``params`` given too
    must match it. Nothing is written into ``out`` until every check has passed.
    """
    out = Path(out)
    RunDir(out).check_start(resume)
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
    if data is not None:
        config.data = {"path": str(data)} if Path(str(data)).exists() else {"name": str(data)}
    if not config.data:
        raise SpecError("no data to train on", Loc(ir.file, 1, 1),
                        "give --data NAME|FILE or `train: {data: {name: digits}}` in the spec")
    split = prepare_data(config.data, val_split=config.val_split, seed=config.seed,
                         standardize=config.standardize, augment=config.augment)
    for part in (split.train, split.val):
        if part is not None:
            check_data(part, ir, losses)
    files = None if resume else spec_files(Path(spec), params)
    return fit(model, objective, split.train, split.val, config, out, metrics=task_of(ir, losses),
               resume=resume, data_stats=split.stats, progress=progress, run_files=files)


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
    load_model_state(model, state["model"], ckpt)
    return ir, model.eval(), objective, losses, state


def _data(source, state: dict, expected: dict):
    dataset = load_dataset(**({"path": str(source)} if Path(str(source)).exists() else {"name": str(source)}))
    if state.get("data_stats"):
        dataset = Standardized(dataset, state["data_stats"])
    check_example_shapes(dataset, expected, limit=256)
    return dataset


def evaluate_run(run_or_checkpoint, data=None, out: Path | None = None, device: str = "auto") -> dict:
    """Metrics of a trained model on ``data``; by default on the run's own validation split."""
    ir, model, objective, losses, state = restore(run_or_checkpoint)
    config = TrainConfig.from_dict(state["config"])
    if data is None:            # the same seeded split and statistics as in training
        dataset = prepare_data(config.data, val_split=config.val_split, seed=config.seed,
                               standardize=config.standardize).val
        if dataset is None:
            raise DataError("the run kept no validation split (val_split: 0); give --data")
    else:
        dataset = _data(data, state, input_shapes(ir))
        check_data(dataset, ir, losses)
    result = evaluate(model, dataset, task_of(ir, losses), objective=objective, batch_size=config.batch_size,
                      device=device)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def predict_run(run_or_checkpoint, data, out, device: str = "auto") -> Path:
    """Write predictions of a trained model for every example of ``data``, on ``device``."""
    ir, model, _, losses, state = restore(run_or_checkpoint)
    task = task_of(ir, losses)
    if task is None:
        raise DataError("predict needs a classification, segmentation or sequence loss in the spec")
    return predict(model, _data(data, state, input_shapes(ir)), task, out, device=device)
