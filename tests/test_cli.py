"""The CLI end to end: exit codes, messages, outputs."""

import subprocess
import sys

from dagnet.cli import main
from tests.conftest import SPECS


def run(*args):
    return subprocess.run([sys.executable, "-m", "dagnet", *map(str, args)], capture_output=True, text=True)


def test_summary_prints_resnet50_parameters(capsys):
    assert main(["summary", str(SPECS / "resnet50.yaml"), "--dim", "H=224", "--dim", "W=224"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 25,557,032" in out
    assert "MACs per example: 4,089,184,256" in out
    assert "layer3.5.body.6" in out


def test_summary_asks_for_symbolic_dims(capsys):
    main(["summary", str(SPECS / "resnet18.yaml")])
    assert "give --dim H=... W=..." in capsys.readouterr().out


def test_cycle_exits_1_with_lines(spec_file):
    path = spec_file("dagnet: 1\ninputs:\n  x: {shape: [4]}\nnodes:\n  a: {op: relu, in: b}\n"
                     "  b: {op: tanh, in: a}\n  c: {op: add, in: [a, x]}\noutputs: [c]\n")
    result = run("check", path)
    assert result.returncode == 1
    assert f"{path}:5:3: error: cycle: `a` (line 5) -> `b` (line 6) -> `a`" in result.stderr


def test_check_ok_and_set(spec_file, capsys):
    assert main(["check", str(SPECS / "resnet18.yaml"), "--set", "classes=5"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check", str(SPECS / "resnet18.yaml"), "--set", "clases=5"]) == 1
    assert "did you mean `classes`?" in capsys.readouterr().err


def test_compile_writes_a_standalone_file(tmp_path, capsys):
    out = tmp_path / "lenet.py"
    assert main(["compile", str(SPECS / "lenet.yaml"), "-o", str(out)]) == 0
    source = out.read_text()
    assert "class Lenet(nn.Module):" in source and "import dagnet" not in source
    assert main(["compile", str(SPECS / "lenet.yaml")]) == 0
    assert "def forward(self, image):" in capsys.readouterr().out


def test_compile_refuses_to_export_checkpointing(tmp_path, capsys):
    assert main(["compile", str(SPECS / "lenet.yaml"), "--checkpoint", "blocks",
                 "-o", str(tmp_path / "lenet.pt")]) == 1
    assert "leave --checkpoint out" in capsys.readouterr().err and not (tmp_path / "lenet.pt").exists()
    assert main(["compile", str(SPECS / "lenet.yaml"), "--checkpoint", "blocks"]) == 0
    assert "dagnet_emit_checkpointed(" in capsys.readouterr().out


def test_ops_lists_every_op(capsys):
    from dagnet import ops
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ops.OPS)


def test_version_and_help():
    assert run("--version").stdout.startswith("dagnet ")
    result = run("summary", "--help")
    assert result.returncode == 0 and "--dim" in result.stdout


def test_help_and_fmt_start_without_the_checker():
    """`dagnet --help` and `dagnet fmt` (an editor's format-on-save) never load sympy,
    networkx or torch: the checker, the render pipeline and the ops load on first use."""
    script = f"""
import sys, contextlib, io
from dagnet.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    for spec in ("resnet50.dag", "resnet50.yaml", "blocks/resnet.yaml"):
        assert main(["fmt", "--check", r"{SPECS}/" + spec]) == 0
    assert main(["convert", r"{SPECS}/lenet.yaml"]) == 0
heavy = sorted(m for m in ("sympy", "networkx", "torch") if m in sys.modules)
print(heavy)
sys.exit(1 if heavy else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def imported_modules(path) -> set[str]:
    """Every module a Python file imports, at any depth (inside functions too)."""
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_render_cli_depends_only_on_the_torch_free_loader():
    """`dagnet render` reads a spec through dagnet.loader; the emitter's side is never imported."""
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "dagnet"
    render_cli = imported_modules(package / "render" / "cli.py")
    assert "dagnet.loader.load" in render_cli
    assert not render_cli & {"dagnet.api", "dagnet.emit", "dagnet.backward", "torch", "dagnet.api.load"}
    assert {"dagnet.api", "dagnet.emit", "torch"}.isdisjoint(imported_modules(package / "loader.py"))
