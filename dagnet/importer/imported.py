"""``dagnet.import_model``: a model in, a spec with its weights out, checked against the source.

:class:`Imported` holds the spec (text in either syntax), the state dict of the
compiled spec (keys exactly those of ``dagnet.compile(spec).state_dict()``)
and, once :meth:`Imported.verify` has run, the largest difference between the
source's outputs and the spec's on the example inputs.
"""

from __future__ import annotations

import importlib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dagnet.importer.graph import Captured, ImportModelError, legal

SUFFIXES = (".dag", ".yaml", ".yml", ".safetensors")
TOLERANCE = 1e-4         # max abs diff allowed, relative to the outputs' scale (max abs value, at least 1)


@dataclass
class Imported:
    """An imported model: the spec, its weights, and how it compares with the source."""

    name: str
    spec: object                                 # dagnet.spec.model.Spec
    weights: dict[str, torch.Tensor]             # keyed by the compiled spec's state-dict keys
    captured: Captured
    source: nn.Module | None = None
    example_inputs: tuple = ()
    max_abs_diff: float | None = None
    scale: float | None = None
    paths: dict[str, str] = field(default_factory=dict)     # op name -> IR node path

    def text(self, format: str = "dag") -> str:
        from dagnet.spec.printer import to_dsl
        from dagnet.spec.yaml_printer import to_yaml
        if format == "dag":
            return to_dsl(self.spec)
        if format in ("yaml", "yml"):
            return to_yaml(self.spec)
        raise ValueError(f"format must be 'dag' or 'yaml', not {format!r}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    @property
    def unsupported(self) -> list:
        return self.captured.unsupported

    def statements(self) -> int:
        """Statements of the DSL text (lines that start one, not continuations, comments or blanks)."""
        return count_statements(self.text("dag"))

    def compile(self) -> nn.Module:
        """The spec compiled, with the imported weights loaded."""
        with tempfile.TemporaryDirectory() as tmp:
            model = _compile_text(self.text("dag"), Path(tmp) / f"{self.spec.name}.dag")
        model.load_state_dict(self.weights)
        return model.eval()

    def verify(self) -> float:
        """Compile, load the weights and compare with the source on the example inputs.

        Returns the max abs diff; a difference above the tolerance is an ImportModelError.
        """
        if self.unsupported:
            raise ImportModelError(unsupported_message(self.unsupported))
        if self.source is None:
            raise ImportModelError("nothing to verify against: the source model is not kept")
        model = self.compile()
        names = [name for name, _, _ in self.captured.inputs]
        with torch.no_grad():
            theirs = _tensors(self.source(*self.example_inputs))
            ours = model(**dict(zip(names, [x for x in self.example_inputs if isinstance(x, torch.Tensor)])))
        ours = _tensors(ours)
        if len(ours) != len(theirs):
            raise ImportModelError(f"{self.name}: the spec has {len(ours)} outputs, the source {len(theirs)}")
        diff, scale = 0.0, 1.0
        for a, b in zip(ours, theirs):
            if a.shape != b.shape:
                raise ImportModelError(f"{self.name}: output shape {tuple(a.shape)} differs from the source's "
                                       f"{tuple(b.shape)}")
            diff = max(diff, (a.double() - b.double()).abs().max().item() if a.numel() else 0.0)
            scale = max(scale, b.double().abs().max().item() if b.numel() else 0.0)
        self.max_abs_diff, self.scale = diff, scale
        if not diff <= TOLERANCE * scale:
            raise ImportModelError(f"{self.name}: outputs differ from the source's: max abs diff {diff:.3g} "
                                   f"(allowed {TOLERANCE * scale:.3g})")
        return diff

    def save(self, path) -> Path:
        """Write the spec (.dag, .yaml) or the spec with the weights (.safetensors), by suffix."""
        path = Path(path)
        if path.suffix not in SUFFIXES:
            raise ImportModelError(f"cannot write `{path.suffix or path.name}`: use .dag, .yaml or .safetensors")
        if not path.parent.is_dir():
            raise ImportModelError(f"cannot write {path}: the folder {path.parent} does not exist")
        if path.suffix == ".safetensors":
            from dagnet.export import save_safetensors
            with tempfile.TemporaryDirectory() as tmp:
                model = _compile_text(self.text("dag"), Path(tmp) / f"{self.spec.name}.dag")
                model.load_state_dict(self.weights)
                save_safetensors(model, path)
        else:
            path.write_text(self.text("dag" if path.suffix == ".dag" else "yaml"))
        return path


def count_statements(text: str) -> int:
    count = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "->", "}", "doc ", '"')) or stripped == "{":
            continue
        count += 1
    return count


def unsupported_message(ops) -> str:
    listed = "; ".join(f"{op.args.get('source_op')} at {op.args.get('location') or op.where}" for op in ops)
    return f"{len(ops)} op(s) have no dagnet equivalent (written as `unsupported` nodes): {listed}"


def _compile_text(text: str, path: Path) -> nn.Module:
    import dagnet
    path.write_text(text)
    return dagnet.compile(path)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or hasattr(value, "to_tuple"):
        value = value.to_tuple() if hasattr(value, "to_tuple") else list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


# -- sources ------------------------------------------------------------------------------
def resolve_source(source, kwargs: dict | None = None, caffemodel=None) -> tuple[nn.Module, str, dict]:
    """An nn.Module from an instance, a ``package.module:callable`` path, or an .onnx / .prototxt file;
    with its name and, for a file, its inputs' declared shapes and types ({name: (shape, dtype)})."""
    if isinstance(source, nn.Module):
        return source, type(source).__name__, {}
    text = str(source)
    suffix = Path(text).suffix.lower()
    if suffix in (".onnx", ".prototxt"):
        if not Path(text).is_file():
            raise ImportModelError(f"no such file: {text}")
        if suffix == ".onnx":
            from dagnet.importer.onnx_front import load_onnx
            front = load_onnx(text)
        else:
            from dagnet.importer.caffe_front import load_caffe
            sibling = Path(text).with_suffix(".caffemodel")
            front = load_caffe(text, caffemodel or (sibling if sibling.is_file() else None))
        dtypes = getattr(front, "dtypes", {}) or {}
        declared = {k: (v, dtypes.get(k, torch.float32)) for k, v in front.inputs.items()}
        return front.module, Path(text).stem, declared
    match = re.fullmatch(r"([A-Za-z_][\w.]*):([A-Za-z_]\w*)", text)
    if not match:
        raise ImportModelError(f"cannot import `{text}`: give package.module:callable (torchvision.models:resnet50), "
                               "an .onnx file or a Caffe .prototxt")
    module_name, attr = match.groups()
    _torchvision_ready()        # transformers imports torchvision too
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ImportModelError(f"cannot import `{text}`: {error}") from None
    try:
        model = factory(**(kwargs or {}))
    except TypeError as error:
        raise ImportModelError(f"calling `{text}` failed: {error}") from None
    if not isinstance(model, nn.Module):
        raise ImportModelError(f"`{text}` returned a {type(model).__name__}, not an nn.Module")
    return model, attr, {}


def _torchvision_ready() -> None:
    """torchvision's wheel for this torch registers fake kernels of `nms`/`qnms` on import, which fails on a
    CPU build where the ops are missing; defining their schemas first lets every model be built."""
    try:
        _ = torch.ops.torchvision.nms
    except (AttributeError, RuntimeError):
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_ready.library = library


DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
          "bool": torch.bool}


def example_inputs_for(given=None, shapes: dict | None = None, declared: dict | None = None) -> tuple:
    """The example inputs: those given; else random ones of the ``--input`` shapes, else of the shapes a
    file declares (with its batch size where it fixes one, else 2), else one 3x224x224 image. Integer inputs (token ids) are 0 or 1."""
    if given is not None:
        return tuple(given) if isinstance(given, (tuple, list)) else (given,)
    generator = torch.Generator().manual_seed(0)
    specs = {k: (v if len(v) == 2 and isinstance(v[0], tuple) else (tuple(v), "float32"))
             for k, v in (shapes or {}).items()}
    batch = 2
    for name, (shape, dtype) in (declared or {}).items() if not specs else ():
        if shape is None or any(d is None for d in shape[1:]):
            raise ImportModelError(f"input `{name}` has no fixed shape in the file: give it with "
                                   f"--input {name}=C,H,W")
        specs[name] = (tuple(shape[1:]), dtype)
        if isinstance(shape[0], int):       # an export with a fixed batch (torch.onnx.export's default)
            batch = shape[0]                # may have baked it into reshapes: capture with that batch
    if not specs:
        return (torch.randn(2, 3, 224, 224, generator=generator),)
    out = []
    for shape, dtype in specs.values():
        dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if dtype.is_floating_point:
            out.append(torch.randn((batch, *shape), generator=generator, dtype=dtype))
        elif dtype == torch.bool:
            out.append(torch.ones((batch, *shape), dtype=torch.bool))
        else:
            out.append(torch.randint(0, 2, (batch, *shape), generator=generator, dtype=dtype))
    return tuple(out)


def parse_input_shapes(values: list[str]) -> dict[str, tuple]:
    """``--input image=3,224,224`` or ``--input ids=16:int64`` (repeatable) -> {name: (shape, dtype)}."""
    shapes = {}
    for value in values or []:
        name, _, rest = value.partition("=")
        dims, _, dtype = rest.partition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or any(d < 1 for d in shape) or (dtype and dtype not in DTYPES):
            raise ImportModelError(f"--input {value!r}: expected NAME=C,H,W (positive sizes), optionally "
                                   f":{'|'.join(DTYPES)} after the sizes")
        shapes[legal(name)] = (shape, dtype or "float32")
    return shapes


def import_model(source, example_inputs=None, name: str | None = None, flat: bool = False,
                 kwargs: dict | None = None, input_shapes: dict | None = None, verify: bool = False,
                 caffemodel=None) -> Imported:
    """Import ``source`` (an nn.Module, ``package.module:callable``, or a file): see docs/import.md."""
    from dagnet.importer.capture import capture
    from dagnet.importer.fold import folded_spec
    from dagnet.importer.write import flat_spec
    model, default_name, declared = resolve_source(source, kwargs, caffemodel)
    model = model.eval()
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None):
        config.use_cache = False       # a Hugging Face decoder returns its key/value cache too: not a model output
    inputs = example_inputs_for(example_inputs, input_shapes, declared)
    if input_shapes is None and declared:
        input_shapes = {legal(k): v for k, v in declared.items()}
    captured = capture(model, inputs, legal(name or default_name, "model"), list(input_shapes or {}))
    if not isinstance(source, nn.Module) and Path(str(source)).suffix.lower() in (".onnx", ".prototxt"):
        origin = Path(str(source)).name          # a file: the GraphModule built from it says nothing
    else:
        origin = f"{type(model).__module__}.{type(model).__qualname__}"
    doc = f"Imported by `dagnet import` from {origin}."
    spec, paths = (flat_spec if flat else folded_spec)(captured, doc)
    weights = _weights(captured, paths)
    imported = Imported(captured.name, spec, weights, captured, model, inputs, paths=paths)
    if verify:
        imported.verify()
    return imported


def _weights(captured: Captured, paths: dict[str, str]) -> dict[str, torch.Tensor]:
    state = {}
    for op in captured.ops:
        for key, value in op.state.items():
            state[f"{paths[op.name]}.{key}"] = value
    return state


def describe(imported: Imported) -> str:
    return json.dumps({"statements": imported.statements(), "ops": len(imported.captured.ops)})
