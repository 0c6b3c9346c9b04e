"""Exporting a compiled model: TorchScript, ``torch.export`` (.pt2) and ONNX.

The format comes from the file suffix. Symbolic input sizes of the spec (and
the batch dimension) stay dynamic in ``.pt2`` and ONNX exports, so an FCN
exported once accepts any image size, as its spec says.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import torch

from dagnet.dims import known
from dagnet.ir import IR


class ExportError(ValueError):
    """A model cannot be exported as asked: said in one line, before anything is written."""

FORMATS = {".pt": "torchscript", ".pt2": "torch.export", ".onnx": "onnx", ".safetensors": "safetensors"}


def example_inputs(ir: IR, batch: int = 2, dims: dict | None = None) -> dict[str, torch.Tensor]:
    """Random inputs of the spec's shapes; symbolic sizes default to 64 unless given."""
    dims = dims or {}
    inputs = {}
    for name in ir.inputs:
        node = ir.node(name)
        shape = [int(d) if known(d) else dims.get(str(d), 64) for d in node.shape]
        if node.dtype == "bool":
            inputs[name] = torch.ones(batch, *shape, dtype=torch.bool)
        elif node.dtype.startswith("int"):
            inputs[name] = torch.zeros(batch, *shape, dtype=getattr(torch, node.dtype))
        else:
            inputs[name] = torch.randn(batch, *shape)
    return inputs


def _dynamic_shapes(ir: IR) -> dict:
    """The batch dim and every symbolic spec dim are dynamic, from 1 up (torch.export
    otherwise assumes 2 or more, and the program refuses a batch or a sequence of one)."""
    dynamic = torch.export.Dim.AUTO(min=1)
    spec = {}
    for name in ir.inputs:
        shape = ir.node(name).shape
        spec[name] = {0: dynamic, **{k + 1: dynamic for k, d in enumerate(shape) if not known(d)}}
    return spec


def _atomic(write):
    """`write(module, path, ...)` into a hidden partial file next to `path`, renamed into place once
    it is complete: an export that fails midway leaves neither `path` nor a partial file."""
    @functools.wraps(write)
    def atomic(module, path, *args, **kwargs):
        path = Path(path)
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")   # the suffix names the format
        try:
            fmt = write(module, partial, *args, **kwargs)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return fmt
    return atomic


@_atomic
def export(module: torch.nn.Module, path, dims: dict | None = None, metadata: dict[str, str] | None = None) -> str:
    """Write ``module`` to ``path`` in the format its suffix names; return the format.

    ``metadata`` ({key: text}, e.g. ``dagnet.class_names``) goes where each format keeps
    such things: ONNX metadata_props, the extra files of TorchScript and .pt2
    (``_extra_files`` / ``extra_files`` of their load functions), safetensors metadata.
    """
    metadata = metadata or {}
    path = Path(path)
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise ExportError(f"cannot export to `{path.suffix}`: use one of {', '.join(FORMATS)} (or .py)")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: the folder {path.parent} does not exist")
    ir: IR = module.dagnet_ir
    module = module.eval()
    if fmt == "safetensors":
        save_safetensors(module, path, metadata)
        return fmt
    inputs = example_inputs(ir, dims=dims)
    from dagnet.fields.portable import portable
    module = portable(module)       # structured nodes as their portable twins: one path, every format
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path), _extra_files=metadata)
    elif fmt == "torch.export":
        program = torch.export.export(module, (), inputs, dynamic_shapes=_dynamic_shapes(ir))
        torch.export.save(program, str(path), extra_files=metadata)
    else:
        try:
            import onnxscript  # noqa: F401  (the exporter needs it)
        except ImportError:
            raise ModuleNotFoundError("ONNX export needs the onnx and onnxscript packages: "
                                      "pip install 'dagnet[export]'", name="onnxscript") from None
        program = torch.onnx.export(module, (), kwargs=inputs, dynamic_shapes=_dynamic_shapes(ir),
                                    dynamo=True, verbose=False)
        program.model.metadata_props.update(metadata)
        _name_outputs(program, ir)
        program.save(str(path))
    return fmt


def _name_outputs(program, ir: IR) -> None:
    """Name the ONNX outputs as the module's: the keys of the dict it returns, or its one output's name
    (the exporter would name them after the last op computing each, e.g. `linear`, `argmax`)."""
    tree = program.exported_program.call_spec.out_spec
    returns_dict = isinstance(tree.type, type) and issubclass(tree.type, dict)
    names = list(tree.context) if returns_dict else list(ir.outputs)[:1]
    if len(names) == len(program.model.graph.outputs):
        for value, name in zip(program.model.graph.outputs, names):
            value.name = name


# -- spec + weights, without pickle ---------------------------------------------

def spec_files(path: Path) -> dict[str, str]:
    """The spec and every file it imports, transitively: {path relative to their common folder: text}.

    The spec comes first.
    """
    from dagnet.spec.frontends import parse_spec
    from dagnet.spec.source import read_source
    found, todo = {}, [Path(path).resolve()]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found[current], file = read_source(current)
        spec = parse_spec(found[current], file, library=True)
        todo += [(current.parent / p).resolve() for p in spec.imports]
    root = Path(os.path.commonpath([p.parent for p in found]))
    return {str(p.relative_to(root)): text for p, text in found.items()}


def save_safetensors(module: torch.nn.Module, path, metadata: dict[str, str] | None = None) -> None:
    """Weights as safetensors, with the spec (and its imports) and parameters in the metadata, and
    what a deployed run adds (dagnet.deploy): its input standardisation (``dagnet.standardize``:
    JSON {input: {mean, std}}) and ``dagnet.labels`` ("true": the predicted labels are an output).

    The file is self-contained and loads without unpickling anything:
    :func:`load_safetensors` rebuilds the model from the embedded spec.
    """
    from safetensors.torch import save_file
    ir: IR = module.dagnet_ir
    files = spec_files(Path(ir.file))
    meta = {"dagnet.format": "1", "dagnet.main": next(iter(files)), "dagnet.files": json.dumps(files),
            "dagnet.params": json.dumps(ir.params), **(metadata or {})}
    deploy = getattr(module, "dagnet_deploy", None)        # a trained run's preprocessing and labels
    if deploy is not None:
        if deploy["standardize"]:
            meta["dagnet.standardize"] = json.dumps(deploy["standardize"])
        if deploy["labels"]:
            meta["dagnet.labels"] = "true"
        module = module.model
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def metadata_json(path, meta: dict, key: str, default=None):
    """The JSON value of a safetensors metadata entry; a malformed one is an ExportError naming it."""
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: metadata `{key}` is not valid JSON ({error})") from None


def load_safetensors(path) -> torch.nn.Module:
    """The model saved by :func:`save_safetensors`, weights loaded (nothing is unpickled)."""
    from safetensors import safe_open

    import dagnet
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("dagnet.format") != "1":
        raise ValueError(f"{path} holds no dagnet spec (was it written by `dagnet compile -o`?)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in metadata_json(path, meta, "dagnet.files", {}).items():
            target = Path(tmp) / name
            if not target.resolve().is_relative_to(Path(tmp).resolve()):
                raise ValueError(f"{path}: an embedded file would be written outside its folder: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        params = metadata_json(path, meta, "dagnet.params", {})
        ir = dagnet.load(Path(tmp) / meta["dagnet.main"], overrides=params)
    from dagnet.deploy import deployed, emit_scoring, prediction_task
    task = prediction_task(ir) if meta.get("dagnet.labels") == "true" else None
    model = emit_scoring(ir, task)
    model.load_state_dict(state)
    stats = metadata_json(path, meta, "dagnet.standardize")
    return deployed(model, stats, task) if (stats or task) else model
