"""Reload exported models in a fresh process and compare their outputs to the compiled module's.

Run as a script by :mod:`dagnet.export_matrix`, never imported: ``python reload_check.py
CASES FILE...``. A ``.py`` file is checked with ``python -I -S`` and ``--path`` naming
torch's site directory, so that it imports with nothing but torch on the path (dagnet
included: its editable install is a .pth file, which -S skips). Prints one JSON object
{file: "yes" or why not}.
"""

import argparse
import importlib.util
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", help="torch.save'd {inputs: [{name: tensor}], expected: [[tensor]], state: ...}")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--path", action="append", default=[], help="the only folders to import from")
    args = parser.parse_args()
    sys.path += args.path
    import torch
    cases = torch.load(args.cases, weights_only=True)
    print(json.dumps({file: check(file, cases) for file in args.files}))


def check(file: str, cases: dict) -> str:
    try:
        run = loader(file, cases)
        for inputs, expected in zip(cases["inputs"], cases["expected"]):
            got = run(inputs)
            if len(got) != len(expected) or any(not close(g, e) for g, e in zip(got, expected)):
                sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
                return f"reloaded outputs differ from the compiled module's ({sizes})"
    except Exception as error:                  # the cell says what failed, in one line
        first = (str(error).strip().splitlines() or [""])[0][:100]
        return f"reload fails: {type(error).__name__}: {first}"
    return "yes"


def loader(file: str, cases: dict):
    """A function of one case's named inputs to the list of output tensors, in the module's output order."""
    import torch
    suffix = file.rsplit(".", 1)[-1]
    if suffix == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(file)
        return lambda inputs: [torch.from_numpy(a) for a in
                               session.run(None, {k: v.numpy() for k, v in inputs.items()})]
    if suffix == "py":
        if importlib.util.find_spec("dagnet") is not None:
            raise RuntimeError("dagnet is importable: the standalone file is not checked alone")
        spec = importlib.util.spec_from_file_location("standalone", file)
        source = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(source)
        classes = [c for c in vars(source).values()
                   if isinstance(c, type) and issubclass(c, torch.nn.Module) and c.__module__ == "standalone"]
        module = classes[-1]()              # the model's class comes last, after the helpers it uses
        module.load_state_dict(cases["state"])
        module.eval()
    elif suffix == "pt":
        module = torch.jit.load(file)
    elif suffix == "pt2":
        module = torch.export.load(file).module()       # in eval mode as exported; .eval() is refused
    else:
        from dagnet.export import load_safetensors
        module = load_safetensors(file).eval()

    def run(inputs):
        with torch.no_grad():
            out = module(**inputs)
        return list(out.values()) if isinstance(out, dict) else [out]
    return run


def close(got, expected) -> bool:
    """Equal up to float error that grows with the outputs' scale (deep nets at random init)."""
    import torch
    if got.shape != expected.shape:
        return False
    if not expected.is_floating_point():
        return bool(torch.equal(got.to(expected.dtype), expected))
    error = (got.double() - expected.double()).abs().nan_to_num(0).max().item() if got.numel() else 0.0
    same_nans = torch.equal(got.isnan(), expected.isnan())
    return same_nans and error <= 1e-4 + 1e-3 * expected.abs().nan_to_num(0).max().item()


if __name__ == "__main__":
    main()
