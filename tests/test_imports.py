"""Block imports: one resolver for both front ends, so YAML and the DSL import each other's libraries.

Every import error is located at the import that causes it (file, line and column).
"""

from pathlib import Path

import pytest

import dagnet
from dagnet.cli import main
from dagnet.errors import SpecError
from dagnet.spec import load_spec, spec_format

DAG_LIB = "library acts\nblock twice {\n  y = x -> relu -> relu\n  output y\n}\n"
YAML_LIB = "dagnet: 1\nblocks:\n  once:\n    nodes:\n      y: {op: relu, in: x}\n    outputs: [y]\n"


def yaml_model(imports: str, block: str) -> str:
    return (f"dagnet: 1\nimports: [{imports}]\ninputs:\n  x: {{shape: [4]}}\n"
            f"nodes:\n  a: {{block: {block}, in: x}}\noutputs: [a]\n")


def dag_model(imports: str, block: str) -> str:
    return f'import "{imports}"\ninput x[4]\na = x -> {block}\noutput a\n'


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def errors_of(path: Path) -> list[SpecError]:
    with pytest.raises(SpecError) as info:
        dagnet.load(path)
    return getattr(info.value, "errors", [info.value])


def where(path: Path, needle: str) -> tuple[str, int, int]:
    """(file, line, column) of the first ``needle`` in the file, 1-based, as a Loc would say."""
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if needle in text)
    return str(path), line + 1, lines[line].index(needle) + 1


def located(error: SpecError) -> tuple[str, int, int]:
    return str(Path(error.loc.file).resolve()), error.loc.line, error.loc.col


# -- the front end a suffix names ----------------------------------------------------
def test_the_suffix_names_the_front_end(tmp_path):
    assert [spec_format(f) for f in ("m.dag", "m.yaml", "m.yml", "<spec>", "m.txt")] == \
        ["dag", "yaml", "yaml", "yaml", "yaml"]
    write(tmp_path, {"m.yml": YAML_LIB, "m.dag": DAG_LIB})
    assert list(load_spec(tmp_path / "m.yml", library=True).blocks) == ["once"]
    assert list(load_spec(tmp_path / "m.dag", library=True).blocks) == ["twice"]


# -- each format imports the other ---------------------------------------------------
def test_a_yaml_spec_imports_a_dag_library(tmp_path):
    write(tmp_path, {"lib/acts.dag": DAG_LIB, "m.yaml": yaml_model("lib/acts.dag", "twice")})
    ir = dagnet.load(tmp_path / "m.yaml")
    assert [n for n in ir.graph if n != "x"] == ["a.y.0", "a.y.1"]
    assert load_spec(tmp_path / "m.yaml").imports == ["lib/acts.dag"]


def test_a_dag_spec_imports_a_yaml_library(tmp_path):
    write(tmp_path, {"lib/acts.yaml": YAML_LIB, "m.dag": dag_model("lib/acts.yaml", "once")})
    ir = dagnet.load(tmp_path / "m.dag")
    assert [n for n in ir.graph if n != "x"] == ["a.y"]


def test_imports_nest_across_formats(tmp_path):
    # m.yaml -> a.dag -> b.yaml -> c.dag, each library using the one it imports
    write(tmp_path, {
        "m.yaml": yaml_model("libs/a.dag", "three"),
        "libs/a.dag": 'library a\nimport "b.yaml"\nblock three {\n  y = x -> two -> relu\n  output y\n}\n',
        "libs/b.yaml": ("dagnet: 1\nimports: [deeper/c.dag]\nblocks:\n  two:\n    nodes:\n"
                        "      y: {block: one, in: x}\n      z: {op: relu, in: y}\n    outputs: [z]\n"),
        "libs/deeper/c.dag": "library c\nblock one {\n  y = x -> relu\n  output y\n}\n",
    })
    spec = load_spec(tmp_path / "m.yaml")
    assert set(spec.blocks) == {"one", "two", "three"}
    assert [n for n in dagnet.load(tmp_path / "m.yaml").graph if n != "x"] == \
        ["a.y.0.y.y", "a.y.0.z", "a.y.1"]


def test_a_library_of_either_format_is_checked_from_the_cli(tmp_path, capsys):
    write(tmp_path, {"acts.dag": DAG_LIB, "m.yaml": yaml_model("acts.dag", "twice")})
    assert main(["check", str(tmp_path / "m.yaml")]) == 0
    assert "ok (2 nodes" in capsys.readouterr().out


# -- errors, each at the import that causes it ---------------------------------------
def test_an_import_cycle_across_formats_is_one_error_with_the_chain(tmp_path):
    write(tmp_path, {"m.yaml": yaml_model("a.dag", "p"),
                     "a.dag": 'library a\nimport "b.yaml"\nblock p {\n  y = x -> relu\n  output y\n}\n',
                     "b.yaml": "dagnet: 1\nimports: [a.dag]\nblocks: {}\n"})
    [error] = errors_of(tmp_path / "m.yaml")
    chain = " -> ".join(str((tmp_path / f).resolve()) for f in ("m.yaml", "a.dag", "b.yaml", "a.dag"))
    assert error.message == f"import cycle: {chain}" and error.hint == "remove one of the imports"
    assert located(error) == where((tmp_path / "b.yaml").resolve(), "a.dag")


def test_a_cycle_met_along_two_import_paths_is_reported_once(tmp_path):
    write(tmp_path, {"m.dag": 'import "a.dag", "b.yaml"\ninput x[4]\ny = x -> relu\noutput y\n',
                     "a.dag": 'library a\nimport "b.yaml"\n',
                     "b.yaml": "dagnet: 1\nimports: [a.dag]\nblocks: {}\n"})
    [error] = errors_of(tmp_path / "m.dag")      # m -> a -> b -> a, and m -> b -> a -> b
    assert error.message.startswith("import cycle:")
    assert located(error) == where((tmp_path / "b.yaml").resolve(), "a.dag")    # where it first closes


def test_a_spec_that_imports_itself(tmp_path):
    write(tmp_path, {"m.yaml": yaml_model("m.yaml", "p")})
    error = errors_of(tmp_path / "m.yaml")[0]
    path = str((tmp_path / "m.yaml").resolve())
    assert error.message == f"import cycle: {path} -> {path}"


@pytest.mark.parametrize("importer, model", [("m.yaml", yaml_model), ("m.dag", dag_model)])
@pytest.mark.parametrize("missing", ["gone.dag", "gone.yaml"])
def test_a_missing_file_is_located_at_its_import(tmp_path, importer, model, missing):
    write(tmp_path, {importer: model(missing, "p")})
    [error] = errors_of(tmp_path / importer)
    assert error.message == f"cannot import `{missing}`: no such file ({(tmp_path / missing).resolve()})"
    # located at the path as written: in the DSL, the string with its opening quote
    as_written = f'"{missing}"' if importer.endswith(".dag") else missing
    assert located(error) == where((tmp_path / importer).resolve(), as_written)


def test_a_block_two_imports_bring_is_an_error_at_the_second(tmp_path):
    write(tmp_path, {"one.yaml": YAML_LIB,
                     "one.dag": "library o\nblock once {\n  y = x -> relu\n  output y\n}\n",
                     "m.dag": 'import "one.yaml"\nimport "one.dag"\ninput x[4]\na = x -> once\noutput a\n'})
    [error] = errors_of(tmp_path / "m.dag")
    assert error.message.startswith("block `once` is imported twice: defined at ")
    assert "one.yaml" in error.message and "one.dag:2" in error.message
    assert (error.loc.line, error.loc.col) == (2, 8)


def test_one_library_reached_along_two_import_paths_is_imported_once(tmp_path):
    """A diamond: two libraries import a common base; a spec importing both gets the base's blocks once."""
    write(tmp_path, {"base.dag": "library b\nblock act {\n  y = x -> relu\n  output y\n}\n",
                     "left.dag": 'library l\nimport "base.dag"\nblock left {\n  y = x -> act\n  output y\n}\n',
                     "right.yaml": "dagnet: 1\nimports: [base.dag]\nblocks:\n  right:\n    nodes:\n"
                                   "      y: {block: act, in: x}\n    outputs: [y]\n",
                     "m.dag": 'import "left.dag"\nimport "right.yaml"\ninput x[4]\n'
                              'a = x -> left -> right -> act\noutput a\n'})
    assert [n.op for n in dagnet.load(tmp_path / "m.dag").order()][1:] == ["relu"] * 3


@pytest.mark.parametrize("library", [False, True])
@pytest.mark.parametrize("lib, lib_text, block",
                         [("acts.dag", DAG_LIB, "twice"), ("acts.yaml", YAML_LIB, "once")])
def test_a_block_defined_here_and_imported_is_an_error_at_the_definition(tmp_path, library, lib, lib_text,
                                                                         block):
    body = f"blocks:\n  {block}:\n    nodes:\n      y: {{op: relu, in: x}}\n    outputs: [y]\n"
    text = f"dagnet: 1\nimports: [{lib}]\n" + body if library else yaml_model(lib, block) + body
    write(tmp_path, {lib: lib_text, "m.yaml": text})
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "m.yaml", library=library)     # a library, too, was not checked before
    assert info.value.message == f"block `{block}` is defined here and imported"
    assert (info.value.loc.line, info.value.loc.col) == where(tmp_path / "m.yaml", f"{block}:")[1:]


def test_an_error_inside_an_imported_library_is_located_in_that_library(tmp_path):
    write(tmp_path, {"acts.dag": "library acts\nblock b {\n  y = x -> relu ->\n  output y\n}\n",
                     "m.yaml": yaml_model("acts.dag", "b")})
    error = errors_of(tmp_path / "m.yaml")[0]
    assert Path(error.loc.file).resolve() == (tmp_path / "acts.dag").resolve() and error.loc.line == 4


def test_a_yaml_library_whose_blocks_are_not_a_mapping_is_a_located_error(tmp_path):
    write(tmp_path, {"lib.yaml": "dagnet: 1\nblocks: [a, b]\n", "m.dag": dag_model("lib.yaml", "a")})
    error = errors_of(tmp_path / "m.dag")[0]
    assert error.message == "`blocks` must be a mapping, found LocList"
    assert (Path(error.loc.file).name, error.loc.line) == ("lib.yaml", 2)


def test_an_import_error_prints_as_one_located_line(tmp_path, capsys):
    write(tmp_path, {"m.yaml": yaml_model("gone.dag", "p")})
    assert main(["check", str(tmp_path / "m.yaml")]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'm.yaml'}:2:11: error: cannot import `gone.dag`")


# -- what travels with a spec --------------------------------------------------------
def test_an_export_holds_the_imported_files_of_either_format(tmp_path):
    from dagnet.export import spec_files
    write(tmp_path, {"m.yaml": yaml_model("lib/a.dag", "three"),
                     "lib/a.dag": ('library a\nimport "b.yaml"\n'
                                   "block three {\n  y = x -> once\n  output y\n}\n"),
                     "lib/b.yaml": YAML_LIB})
    files = spec_files(tmp_path / "m.yaml")
    assert list(files)[0] == "m.yaml" and set(files) == {"m.yaml", "lib/a.dag", "lib/b.yaml"}
    assert files["lib/b.yaml"] == YAML_LIB


def test_a_run_keeps_a_yaml_spec_with_its_dag_blocks_written_in(tmp_path):
    from dagnet.train.run import spec_snapshot
    write(tmp_path, {"lib/acts.dag": DAG_LIB, "m.yaml": yaml_model("lib/acts.dag", "twice")})
    write(tmp_path, {"run/spec.yaml": spec_snapshot(tmp_path / "m.yaml").decode()})
    assert "imports" not in (tmp_path / "run/spec.yaml").read_text()
    assert list(dagnet.load(tmp_path / "run/spec.yaml").graph) == list(dagnet.load(tmp_path / "m.yaml").graph)
