"""``dagnet import SOURCE -o OUT``: the command over :func:`dagnet.importer.imported.import_model`."""

from __future__ import annotations

import argparse
import json
import time


def add_import_command(sub) -> None:
    help_text = "Import a PyTorch model (package.module:callable), an .onnx file or a Caffe .prototxt as a spec."
    p = sub.add_parser("import", help=help_text, description=help_text + " The spec is compiled and its "
                       "outputs compared with the source's on example inputs unless --no-verify.")
    p.add_argument("source", help="package.module:callable (e.g. torchvision.models:resnet50), model.onnx, "
                                  "or net.prototxt")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help=".dag or .yaml (the spec), or .safetensors (the spec embedded, with the weights)")
    p.add_argument("--kwargs", metavar="JSON", help='arguments of the factory, e.g. \'{"num_classes": 10}\'')
    p.add_argument("--input", action="append", metavar="NAME=C,H,W",
                   help="an example input's per-example shape (and type: ids=16:int64), where the source does not fix "
                        "it (repeatable)")
    p.add_argument("--caffemodel", metavar="FILE", help="a Caffe net's weights (default: the .caffemodel beside "
                                                          "the .prototxt, if there is one)")
    p.add_argument("--flat", action="store_true", help="one statement per op: no blocks, no repeats")
    p.add_argument("--name", help="the spec's model name (default: the factory's or file's)")
    p.add_argument("--no-verify", action="store_true", help="skip comparing outputs with the source")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from dagnet.importer.graph import ImportModelError
    from dagnet.importer.imported import (
        import_model,
        parse_input_shapes,
        unsupported_message,
    )
    start = time.perf_counter()
    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else None
    except json.JSONDecodeError as error:
        raise ImportModelError(f"--kwargs is not valid JSON ({error})") from None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ImportModelError("--kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    imported = import_model(args.source, name=args.name, flat=args.flat, kwargs=kwargs,
                            input_shapes=parse_input_shapes(args.input) or None, caffemodel=args.caffemodel)
    path = imported.save(args.output)
    ops = len(imported.captured.ops)
    print(f"wrote {path}: {imported.statements()} statements for {ops} ops")
    if imported.unsupported:
        raise ImportModelError(unsupported_message(imported.unsupported))
    if not args.no_verify:
        diff = imported.verify()
        batch = int(imported.example_inputs[0].shape[0]) if imported.example_inputs else 0
        print(f"verified: max abs diff {diff:.3g} against the source on a batch of {batch} "
              f"({time.perf_counter() - start:.1f} s)")
    return 0
