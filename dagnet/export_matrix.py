"""The export matrix: every spec in specs/ written in every format, reloaded, and compared.

For each spec and format, ``dagnet compile SPEC -o F`` writes the file (random
weights, symbolic sizes as small as the spec allows), a fresh process reloads it
(:mod:`dagnet.reload_check`: ``.py`` with nothing but torch importable, ``.onnx`` in
onnxruntime) and its outputs must equal the compiled module's at two batch sizes and,
where the spec has symbolic sizes, at two sizes. A cell is "yes", the CLI's one-line
refusal (and then no file may exist), or what failed.

``python -m dagnet.export_matrix`` checks every spec and writes the table into
docs/backend.md; ``--spec NAME`` checks some and prints their rows. tests/test_export_matrix.py
checks each spec against the table, so the docs say what the code does. It lives in the
package, like ``dagnet.docs``, because it generates documentation from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DOC = ROOT / "docs" / "backend.md"
FORMATS = (".py", ".pt", ".pt2", ".onnx", ".safetensors")
BEGIN, END = "<!-- export-matrix: begin -->", "<!-- export-matrix: end -->"

# sizes of each symbolic input dim: (the example exported with, a second one checked too)
SIZES = {"T": (5, 9), "H": (32, 48), "W": (32, 40)}
# the specs `make test` checks (about 20 s of one core each): a convnet, a BiLSTM-CRF and a
# hidden CRF; `make test-export` checks them all
QUICK = {"digits_cnn", "cnf_tagger", "hcrf_gestures"}


def all_specs() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.yaml"))


def cases(ir, sizes: dict[str, tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """Random inputs at batch 2 with the first sizes, and batch 3 with the second: ragged masks
    (the first row full), token ids in the smallest vocabulary a spec has (0 and 1)."""
    from dagnet.dims import known
    generator = torch.Generator().manual_seed(0)
    out = []
    for batch, k in ((2, 0), (3, 1)):
        inputs = {}
        for name in ir.inputs:
            node = ir.node(name)
            shape = [batch, *(int(d) if known(d) else sizes[str(d)][k] for d in node.shape)]
            if node.dtype == "bool":
                lengths = torch.randint(1, shape[-1] + 1, (batch,), generator=generator)
                lengths[0] = shape[-1]
                inputs[name] = torch.arange(shape[-1]) < lengths[:, None]
            elif node.dtype.startswith("int"):
                inputs[name] = torch.randint(0, 2, shape, generator=generator, dtype=getattr(torch, node.dtype))
            else:
                inputs[name] = torch.randn(shape, generator=generator)
        out.append(inputs)
    return out


def spec_sizes(ir) -> dict[str, tuple[int, int]]:
    from dagnet.dims import known
    symbols = {str(d) for n in ir.inputs for d in ir.node(n).shape if not known(d)}
    return {s: SIZES[s] for s in sorted(symbols)}


def check_spec(name: str, folder: Path) -> dict[str, str]:
    """Every format's cell for one spec (run it in a fresh process: see :func:`check_in_subprocess`)."""
    import dagnet
    spec = SPECS / f"{name}.yaml"
    ir = dagnet.load(spec)
    sizes = spec_sizes(ir)
    torch.manual_seed(0)
    model = dagnet.compile(ir).eval()
    inputs = cases(ir, sizes)
    with torch.no_grad():
        expected = [[*out.values()] if isinstance(out, dict) else [out] for out in (model(**x) for x in inputs)]
    torch.save({"inputs": inputs, "expected": expected, "state": model.state_dict()}, folder / "cases.pt")
    cells, written = {}, []
    dims = [f"--dim={s}={v[0]}" for s, v in sizes.items()]
    for suffix in FORMATS:
        path = folder / f"{name}{suffix}"
        torch.manual_seed(0)            # the weights `dagnet.compile` gave `model`
        cells[suffix] = write(spec, path, dims)
        if cells[suffix] is None:
            written.append(path)
    cells |= reload(folder / "cases.pt", [p for p in written if p.suffix != ".py"])
    cells |= reload(folder / "cases.pt", [p for p in written if p.suffix == ".py"], alone=True)
    return {suffix: cells[suffix] for suffix in FORMATS}


def write(spec: Path, path: Path, dims: list[str]) -> str | None:
    """`dagnet compile SPEC -o PATH`: None when written, else the cell saying why not."""
    from dagnet.cli import main
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(["compile", str(spec), "-o", str(path), *dims])
    except Exception as error:     # noqa: BLE001  (a crash is a cell too)
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).replace(str(path.parent), "<tmp>")  # no colours
        cell = f"export fails: {type(error).__name__}: {(message.strip().splitlines() or [''])[0][:100]}"
    else:
        if not status:
            return None
        line = err.getvalue().strip().replace(str(path.parent), "<tmp>")
        cell = line.removeprefix("dagnet compile: error: ")
        if "\n" in line:
            cell = f"refused in more than one line: {line.splitlines()[0]}"
    left = [p.name for p in (path, path.with_name(f".{path.stem}.partial{path.suffix}")) if p.exists()]
    return f"{cell} (and left {left[0]} behind)" if left else cell


def reload(cases_file: Path, files: list[Path], alone: bool = False) -> dict[str, str]:
    """Cells of written files, checked by a fresh process; `alone`: only torch importable (.py)."""
    if not files:
        return {}
    script = Path(__file__).with_name("reload_check.py")
    command = [sys.executable, *(["-I", "-S"] if alone else []), str(script), str(cases_file), *map(str, files)]
    if alone:
        command += ["--path", str(Path(torch.__file__).parent.parent)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cases_file.parent)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:100]
        return {p.suffix: f"reload crashes: {last}" for p in files}
    return {Path(f).suffix: cell for f, cell in json.loads(done.stdout.splitlines()[-1]).items()}


def check_in_subprocess(name: str) -> dict[str, str]:
    """:func:`check_spec` in a fresh process (one per spec), in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "dagnet.export_matrix", "--json", name, "--folder", tmp],
                              capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:100]
        return {suffix: f"check crashes: {last}" for suffix in FORMATS}
    return json.loads(done.stdout.splitlines()[-1])


# -- the table in docs/backend.md --------------------------------------------------

def table(rows: dict[str, dict[str, str]]) -> str:
    lines = ["| spec | " + " | ".join(f"`{s}`" for s in FORMATS) + " |", "|---" * (len(FORMATS) + 1) + "|"]
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join(cells[s].replace("|", "/") for s in FORMATS) + " |")
    return "\n".join(lines)


def documented() -> dict[str, dict[str, str]]:
    """The table docs/backend.md shows: {spec: {suffix: cell}}."""
    text = DOC.read_text()
    rows = {}
    for line in text[text.index(BEGIN):text.index(END)].splitlines()[3:]:
        name, *cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[name] = dict(zip(FORMATS, cells))
    return rows


def write_doc(rows: dict[str, dict[str, str]]) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(rows) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagnet.export_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", action="append", help="check only these specs and print their rows")
    parser.add_argument("--jobs", type=int, default=1, help="specs checked at once")
    parser.add_argument("--json", metavar="SPEC", help=argparse.SUPPRESS)       # one spec, in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(check_spec(args.json, Path(args.folder))))
        return 0
    names = args.spec or all_specs()
    def checked(name: str) -> dict[str, str]:
        cells = check_in_subprocess(name)
        print(table({name: cells}).splitlines()[-1], file=sys.stderr, flush=True)      # progress
        return cells

    order = sorted(names, key=lambda name: (name not in QUICK, name))          # the quick rows first
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = dict(zip(order, pool.map(checked, order)))
    rows = {name: rows[name] for name in names}
    if args.spec:
        print(table(rows))
    else:
        write_doc(rows)
        print(f"wrote the export matrix of {len(rows)} specs into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
