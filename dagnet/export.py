"""Exporting a compiled model: TorchScript, ``torch.export`` (.pt2) and ONNX.

The format comes from the file suffix. Symbolic input sizes of the spec (and
the batch dimension) stay dynamic in ``.pt2`` and ONNX exports, so an FCN
exported once accepts any image size, as its spec says.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dagnet.dims import known
from dagnet.ir import IR

FORMATS = {".pt": "torchscript", ".pt2": "torch.export", ".onnx": "onnx"}


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
    """The batch dim and every symbolic spec dim are dynamic."""
    spec = {}
    for name in ir.inputs:
        shape = ir.node(name).shape
        spec[name] = {0: torch.export.Dim.AUTO,
                      **{k + 1: torch.export.Dim.AUTO for k, d in enumerate(shape) if not known(d)}}
    return spec


def export(module: torch.nn.Module, path, dims: dict | None = None) -> str:
    """Write ``module`` to ``path`` in the format its suffix names; return the format."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise ValueError(f"cannot export to `{path.suffix}`: use one of {', '.join(FORMATS)} (or .py)")
    ir: IR = module.dagnet_ir
    module = module.eval()
    inputs = example_inputs(ir, dims=dims)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path))
    elif fmt == "torch.export":
        program = torch.export.export(module, (), inputs, dynamic_shapes=_dynamic_shapes(ir))
        torch.export.save(program, str(path))
    else:
        try:
            import onnxscript  # noqa: F401  (the exporter needs it)
        except ImportError:
            raise RuntimeError("ONNX export needs the onnx and onnxscript packages: "
                               "pip install 'dagnet[export]'") from None
        program = torch.onnx.export(module, (), kwargs=inputs, dynamic_shapes=_dynamic_shapes(ir),
                                    dynamo=True, verbose=False)
        program.save(str(path))
    return fmt
