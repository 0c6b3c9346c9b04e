"""Exporting a compiled model: TorchScript, ``torch.export`` (.pt2) and ONNX.

The format comes from the file suffix. Symbolic input sizes of the spec (and
the batch dimension) stay dynamic in ``.pt2`` and ONNX exports, so an FCN
exported once accepts any image size, as its spec says.
"""

from __future__ import annotations

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


def export(module: torch.nn.Module, path, dims: dict | None = None) -> str:
    """Write ``module`` to ``path`` in the format its suffix names; return the format."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise ExportError(f"cannot export to `{path.suffix}`: use one of {', '.join(FORMATS)} (or .py)")
    ir: IR = module.dagnet_ir
    module = module.eval()
    if fmt == "safetensors":
        save_safetensors(module, path)
        return fmt
    inputs = example_inputs(ir, dims=dims)
    from dagnet.fields.portable import portable
    module = portable(module)       # structured nodes as their portable twins: one path, every format
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path))
    elif fmt == "torch.export":
        program = torch.export.export(module, (), inputs, dynamic_shapes=_dynamic_shapes(ir))
        torch.export.save(program, str(path))
    else:
        try:
            import onnxscript  # noqa: F401  (the exporter needs it)
        except ImportError:
            raise ModuleNotFoundError("ONNX export needs the onnx and onnxscript packages: "
                                      "pip install 'dagnet[export]'", name="onnxscript") from None
        program = torch.onnx.export(module, (), kwargs=inputs, dynamic_shapes=_dynamic_shapes(ir),
                                    dynamo=True, verbose=False)
        program.save(str(path))
    return fmt


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


def save_safetensors(module: torch.nn.Module, path) -> None:
    """Weights as safetensors, with the spec (and its imports) and parameters in the metadata, and
    a run's input standardisation (``dagnet.standardize``: JSON {input: {mean, std}}) if it has one.

    The file is self-contained and loads without unpickling anything:
    :func:`load_safetensors` rebuilds the model from the embedded spec.
    """
    from safetensors.torch import save_file
    ir: IR = module.dagnet_ir
    files = spec_files(Path(ir.file))
    meta = {"dagnet.format": "1", "dagnet.main": next(iter(files)), "dagnet.files": json.dumps(files),
            "dagnet.params": json.dumps(ir.params)}
    stats = getattr(module, "dagnet_standardize", None)    # a trained run's preprocessing (dagnet.deploy)
    if stats:
        meta["dagnet.standardize"] = json.dumps(stats)
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
        model = dagnet.compile(Path(tmp) / meta["dagnet.main"], overrides=params)
    model.load_state_dict(state)
    stats = metadata_json(path, meta, "dagnet.standardize")
    if stats:
        from dagnet.deploy import standardized
        model = standardized(model, stats)
    return model
