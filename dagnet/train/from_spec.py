"""`dagnet train`, `eval` and `predict` for a spec: bind its inputs, losses and data to the loop.

A run directory keeps a copy of the spec (``spec.yaml`` or ``spec.dag``) and
the parameters it was compiled with (``spec.json``), so a run can be
evaluated, used for prediction or resumed without the original file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from dagnet.api import load
from dagnet.data import DataError, Standardized, check_example_shapes, load_dataset, prepare_data
from dagnet.dims import known
from dagnet.emit import emit
from dagnet.check_train import resolve_losses
from dagnet.errors import ErrorLog, Loc, SpecError
from dagnet.ir import IR
from dagnet.train.checkpoint import load_checkpoint
from dagnet.train.config import TrainConfig, resolve_config
from dagnet.train.evaluate import evaluate, predict
from dagnet.train.loop import fit, seed_everything
from dagnet.train.metrics import infer_task
from dagnet.train.objective import ObjectiveError, build_objective

# what a structured node predicts, for metrics and prediction files
FIELD_TASKS = {"chain_crf": "sequence", "latent_dynamic_crf": "sequence", "tree_crf": "sequence",
               "hidden_crf": "classification", "grid_crf": "segmentation", "dense_crf": "segmentation"}


def spec_losses(ir: IR) -> tuple[list[dict], list[str]]:
    """The spec's losses with node names resolved, and the node outputs they need.

    Raises SpecErrors naming every problem, located (the checks `dagnet check` runs)."""
    errors = ErrorLog()
    resolved = resolve_losses(ir, errors)
    errors.raise_if_any()
    return resolved


def task_of(ir: IR, losses: list[dict]):
    """The metrics' Task, told what a CRF node predicts (its potentials alone do not say)."""
    task = infer_task(losses)
    if task is not None and task.node is not None:
        task = dataclasses.replace(task, kind=FIELD_TASKS.get(ir.node(task.node).op, task.kind))
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
    """Shapes and dtypes of the inputs, and class labels within the range the outputs score."""
    check_example_shapes(dataset, input_shapes(ir), dtypes=input_dtypes(ir), limit=limit)
    for loss in losses:
        if loss.get("op") != "cross_entropy":
            continue
        shape = ir.node(ir.outputs.get(loss["output"], loss["output"])).shape
        classes = shape[-1] if len(shape) == 2 else shape[0]      # [T, K] sequences, else [K, ...]
        if known(classes):
            check_example_shapes(dataset, {}, ranges={loss["target"]: (0, int(classes) - 1)},
                                 ignore_index=loss.get("ignore_index", -100), limit=limit)


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
    """Train a spec; ``flags`` are ``key=value`` training overrides. Returns the run summary."""
    out = Path(out)
    if resume:
        spec, params = stored_spec(out)
    ir = load(Path(spec), params)
    flags = list(flags) + ([f"epochs={epochs}"] if epochs else [])
    if resume and (out / "config.yaml").exists():
        config = resolve_config(None, out / "config.yaml", flags)
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
    check_data(split.train, ir, losses)
    if not resume:
        _store_spec(Path(spec), params, out)
    return fit(model, objective, split.train, split.val, config, out, metrics=task_of(ir, losses),
               resume=resume, data_stats=split.stats, progress=progress)


def _store_spec(spec: Path, params, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    copy = out / ("spec" + spec.suffix)
    shutil.copyfile(spec, copy)
    (out / "spec.json").write_text(json.dumps({"spec": copy.name, "source": str(spec),
                                              "params": params or {}}, indent=2) + "\n")


def stored_spec(run: Path) -> tuple[Path, dict]:
    meta_path = run / "spec.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{run} is not a dagnet run directory (no spec.json)")
    meta = json.loads(meta_path.read_text())
    return run / meta["spec"], meta["params"]


def _checkpoint(path: Path) -> tuple[Path, Path]:
    """(run directory, checkpoint file) from either."""
    if path.is_dir():
        best = path / "best.pt"
        return path, best if best.exists() else path / "last.pt"
    return path.parent, path


def restore(run_or_checkpoint) -> tuple:
    """The trained model, its losses and checkpoint state, from a run dir or a checkpoint."""
    run, ckpt = _checkpoint(Path(run_or_checkpoint))
    spec, params = stored_spec(run)
    ir = load(spec, params)
    model, objective, losses = build_model(ir)
    state = load_checkpoint(ckpt)
    model.load_state_dict(state["model"])
    return ir, model.eval(), objective, losses, state


def _data(source, state: dict, expected: dict):
    dataset = load_dataset(**({"path": str(source)} if Path(str(source)).exists() else {"name": str(source)}))
    if state.get("data_stats"):
        dataset = Standardized(dataset, state["data_stats"])
    check_example_shapes(dataset, expected, limit=256)
    return dataset


def evaluate_run(run_or_checkpoint, data=None, out: Path | None = None) -> dict:
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
    result = evaluate(model, dataset, task_of(ir, losses), objective=objective, batch_size=config.batch_size)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def predict_run(run_or_checkpoint, data, out) -> Path:
    """Write predictions of a trained model for every example of ``data``."""
    ir, model, _, losses, state = restore(run_or_checkpoint)
    task = task_of(ir, losses)
    if task is None:
        raise DataError("predict needs a classification, segmentation or sequence loss in the spec")
    return predict(model, _data(data, state, input_shapes(ir)), task, out)
