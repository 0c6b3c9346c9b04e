"""Bounded parsing: bad bytes, huge files, alias and expression bombs end in one located error.

Each test is an attack from issue #15 run through the CLI (or the library
call the CLI makes): it must end within seconds, exit 1, and print
``file:line:col: error: ...`` with no traceback.
"""

import time

import pytest

from dagnet.cli import main
from dagnet.errors import SpecError
from dagnet.spec.source import MAX_SPEC_BYTES

TINY_YAML = "dagnet: 1\ninputs: {x: {shape: [3]}}\nnodes: {a: {op: relu, in: x}}\noutputs: [a]\n"
TINY_DAG = "input x[3]\na = x -> relu\noutput a\n"
COMMANDS = ["check", "fmt", "convert", "summary"]


def run_cli(capsys, *args) -> tuple[int, str]:
    """Run ``dagnet ARGS`` in-process; return (exit status, stderr)."""
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def assert_located(err: str, where: str, message: str) -> None:
    """One error line ``where: error: ...message...``, and no traceback."""
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"{where}: error: "), err
    assert message in first, err


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- bytes that are not UTF-8 text ---------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("suffix", [".yaml", ".dag"])
def test_latin1_spec_names_the_byte_and_its_place(tmp_path, capsys, command, suffix):
    text = ("dagnet: 1\nname: café\n" + TINY_YAML[10:]) if suffix == ".yaml" else 'model "café"\n' + TINY_DAG
    path = write(tmp_path, "latin1" + suffix, text.encode("latin-1"))
    status, err = run_cli(capsys, command, path)
    assert status == 1
    line, col, offset = (2, 10, 19) if suffix == ".yaml" else (1, 11, 10)
    assert_located(err, f"{path}:{line}:{col}", f"not UTF-8 text: byte 0xe9 at offset {offset}")
    assert "hint: save the file as UTF-8" in err


def test_random_bytes_are_a_located_error(tmp_path, capsys):
    path = write(tmp_path, "noise.yaml", bytes(range(256)) * 4)
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    assert_located(err, f"{path}:2:118", "byte 0x80 at offset 128")   # the 11th byte is a newline


def test_the_source_excerpt_never_prints_control_bytes(tmp_path, capsys):
    path = write(tmp_path, "noise.yaml", b"name: \x1b]0;pwned\x07\x00 \xff\n")
    status, err = run_cli(capsys, "check", path)
    assert status == 1 and "\x1b" not in err and "\x00" not in err and "\x07" not in err
    assert_located(err, f"{path}:1:19", "byte 0xff at offset 18")


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16 (little-endian)"),
                                            ("utf-16-be", "UTF-16 (big-endian)"),
                                            ("utf-32", "UTF-32 (little-endian)")])
def test_utf16_and_utf32_are_named(tmp_path, capsys, encoding, name):
    data = TINY_YAML.encode(encoding)
    if not encoding.endswith("-be"):
        assert data[:2] == b"\xff\xfe"          # Python writes the BOM for plain utf-16/utf-32
    else:
        data = b"\xfe\xff" + data
    path = write(tmp_path, "wide.yaml", data)
    for command in COMMANDS:
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:1:1", f"the spec is {name} text")
        assert "iconv -f UTF-" in err


@pytest.mark.parametrize("suffix, text", [(".yaml", TINY_YAML), (".dag", TINY_DAG)])
def test_a_utf8_byte_order_mark_just_works(tmp_path, capsys, suffix, text):
    path = write(tmp_path, "bom" + suffix, b"\xef\xbb\xbf" + text.encode())
    assert main(["check", str(path)]) == 0
    assert main(["convert", str(path)]) == 0
    assert main(["fmt", str(path)]) == 0
    assert "error" not in capsys.readouterr().err


# -- files that are not spec files ----------------------------------------------
@pytest.mark.parametrize("command", COMMANDS + ["render"])
def test_a_directory_is_one_line(tmp_path, capsys, command):
    folder = tmp_path / "specs.yaml"
    folder.mkdir()
    args = [command, folder] + (["-o", tmp_path / "x.svg"] if command == "render" else [])
    status, err = run_cli(capsys, *args)
    assert status == 1
    assert_located(err, f"{folder}:0:0", "is a directory, not a spec file")


# -- size ------------------------------------------------------------------------
def big_spec(size: int) -> bytes:
    lines, i, total = [TINY_YAML.replace("outputs: [a]\n", "")], 0, 0
    while total < size:
        lines.append(f"  n{i}: {{op: relu, in: x}}\n")
        total += len(lines[-1])
        i += 1
    return ("".join(lines).replace("nodes: {a: {op: relu, in: x}}\n", "nodes:\n  a: {op: relu, in: x}\n")
            + "outputs: [a]\n").encode()


@pytest.mark.parametrize("command", ["check", "fmt", "convert"])
def test_a_50_mb_spec_is_refused_before_parsing(tmp_path, capsys, command):
    path = write(tmp_path, "huge.yaml", big_spec(50 * 2**20))
    started = time.monotonic()
    status, err = run_cli(capsys, command, path)
    assert time.monotonic() - started < 5
    assert status == 1
    assert f"over the limit of {MAX_SPEC_BYTES:,}" in err
    line = path.read_bytes()[:MAX_SPEC_BYTES].count(b"\n") + 1
    assert err.startswith(f"{path}:{line}:")


def test_spec_text_given_directly_has_the_same_limit():
    import dagnet
    text = big_spec(MAX_SPEC_BYTES + 10).decode()
    with pytest.raises(SpecError, match="over the limit"):
        dagnet.load(text)


def test_a_spec_just_under_the_limit_is_read():
    from dagnet.spec.source import read_source
    text = "#" * (MAX_SPEC_BYTES - 1) + "\n"
    assert read_source(text)[0] == text


# -- YAML aliases and nesting ---------------------------------------------------------
def doubling(section: str, levels: int = 40) -> str:
    """A spec whose `section` doubles a list through aliases ``levels`` times (2**40 values)."""
    head = TINY_YAML.replace("nodes: {a: {op: relu, in: x}}\n", "")
    if section == "inputs":
        lines = [f"  x{k}: {{shape: &s{k} [*s{k - 1}, *s{k - 1}]}}" for k in range(1, levels + 1)]
        return ("dagnet: 1\ninputs:\n  x0: {shape: &s0 [3, 3]}\n" + "\n".join(lines)
                + "\nnodes: {a: {op: relu, in: x0}}\noutputs: [a]\n")
    if section == "nodes":
        lines = [f"  b{k}: {{op: relu, in: x, foo: &s{k} [*s{k - 1}, *s{k - 1}]}}" for k in range(1, levels + 1)]
        return head.replace("outputs", "nodes:\n  a: {op: relu, in: x, foo: &s0 [1, 1]}\n"
                            + "\n".join(lines) + "\noutputs")
    lines = [f"  l{k}: &s{k} [*s{k - 1}, *s{k - 1}]" for k in range(1, levels + 1)]
    return TINY_YAML + "train:\n  l0: &s0 [1, 1]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("section", ["inputs", "nodes", "train"])
def test_an_alias_bomb_stops_at_the_alias(spec_file, capsys, section):
    text = doubling(section)
    path = spec_file(text)
    started = time.monotonic()
    status, err = run_cli(capsys, "check", path)
    assert time.monotonic() - started < 10
    assert status == 1
    # 2 + 2*(2 + 2*(...)) passes 100,000 values at the 15th level, whose line holds `*s13` twice
    line = next(i for i, text in enumerate(text.splitlines(), 1) if "*s13" in text)
    col = text.splitlines()[line - 1].rindex("*s13") + 1
    assert_located(err, f"{path}:{line}:{col}", "YAML aliases expand to more than 100,000 values (at `*s13`)")


def test_a_few_aliases_still_work(spec_file, capsys):
    text = ("dagnet: 1\ninputs: {x: {shape: &dims [3]}, y: {shape: *dims}}\n"
            "nodes: {a: {op: add, in: [x, y]}}\noutputs: [a]\ntrain: {betas: &b [0.9, 0.99]}\n")
    assert main(["check", str(spec_file(text))]) == 0


def test_deep_yaml_nesting_is_located(spec_file, capsys):
    text = TINY_YAML + "train: {data: " + "[" * 300 + "]" * 300 + "}\n"
    path = spec_file(text)
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    # the top mapping and `train` are two levels; the 199th `[` (column 15 + 198) is the 201st
    assert_located(err, f"{path}:5:{15 + 198}", "YAML nested more than 200 levels deep")


def test_a_long_list_under_train_is_located(spec_file, capsys):
    text = TINY_YAML + "train:\n  data: [" + "1," * 120_000 + "1]\n"
    path = spec_file(text)
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    assert_located(err, f"{path}:6:3", "a value holds more than 100,000 items")


# -- expressions ---------------------------------------------------------------------
def yaml_param(expression: str) -> str:
    quoted = expression.replace("'", "''")
    return f"dagnet: 1\nparams: {{k: [1, 2], w: '{quoted}'}}\n" + TINY_YAML[10:]


@pytest.mark.parametrize("expression, message", [
    ('"ab" * 10**10', "this would build a string of 20,000,000,000 characters; the limit is 10,000"),
    ("10**10 * 'ab'", "this would build a string of 20,000,000,000 characters"),
    ("k * 10**10", "this would build a list of 20,000,000,000 items"),
    ('"%0999999999d" % 1', "`%` formats strings in Python; it is not allowed"),
    ('-"a"', "a sign needs a number, found the string `a`"),
    ('"a" < 1', "cannot compare the string `a` with `1`"),
    ("2 ** 'a'", "`**` cannot combine `2` and the string `a`"),
    ("-" * 990 + "1", "expression nested more than 100 levels deep"),
])
def test_expression_bombs_are_errors_at_the_parameter(spec_file, capsys, expression, message):
    path = spec_file(yaml_param(expression))
    started = time.monotonic()
    status, err = run_cli(capsys, "check", path)
    assert time.monotonic() - started < 2
    assert status == 1
    assert_located(err, f"{path}:2:21", f"parameter `w`: {message}")


def test_short_strings_still_repeat_and_concatenate():
    from dagnet.expr import evaluate
    assert evaluate('"ab" * 3 + "c"', {}) == "abababc"


def test_string_repetition_in_the_dsl(spec_file, capsys):
    path = spec_file('param w = "ab" * 10**10\n' + TINY_DAG, "model.dag")
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    assert_located(err, f"{path}:1:7", "this would build a string of 20,000,000,000 characters")


@pytest.mark.parametrize("terms", ["1", "k"])
def test_a_long_dsl_expression_is_refused_at_parse_time(spec_file, capsys, terms):
    path = spec_file("param k = 2\nparam w = " + "+".join([terms] * 20_000) + "\n" + TINY_DAG, "model.dag")
    for command in ("check", "fmt", "convert"):
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:2:11", "an expression of 39,999 characters; the limit is 1,000")


def test_a_deep_dsl_expression_is_refused_at_parse_time(spec_file, capsys):
    path = spec_file("param k = 2\nparam w = " + "- " * 300 + "k\n" + TINY_DAG, "model.dag")
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    assert_located(err, f"{path}:2:11", "expression nested more than 100 levels deep")


@pytest.mark.parametrize("body", ["-" * 100_000 + "1", "+".join(["1"] * 20_000), "- " * 300 + "k"])
def test_a_deep_yaml_call_is_located(spec_file, capsys, body):
    text = f"dagnet: 1\ninputs: {{x: {{shape: [3]}}}}\nnodes: {{a: {{op: 'linear({body})', in: x}}}}\noutputs: [a]\n"
    path = spec_file(text)
    for command in ("check", "fmt", "convert"):
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:3:17", "is nested more than 100 levels deep")


def test_a_long_yaml_parameter_still_formats(spec_file, capsys):
    path = spec_file("dagnet: 1\nparams: {w: '" + "+".join(["1"] * 20_000) + "'}\n" + TINY_YAML[10:])
    assert main(["fmt", str(path)]) == 0
    assert main(["convert", str(path)]) == 0


# -- DSL nesting -------------------------------------------------------------------------
# `relu(` is the first level, so the 100th `[` or `{` is the 101st: the one reported
@pytest.mark.parametrize("value, col", [("relu(" + "[" * 5000 + "]" * 5000 + ")", 15 + 99),
                                        ("relu(k=" + "{a: " * 3000 + "1" + "}" * 3000 + ")", 17 + 4 * 99)])
def test_deep_dsl_brackets_are_located(spec_file, capsys, value, col):
    path = spec_file(f"input x[3]\na = x -> {value}\noutput a\n", "model.dag")
    for command in ("check", "fmt", "convert"):
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:2:{col}", "brackets nested more than 100 deep")


def test_thousands_of_errors_render_in_linear_time(tmp_path):
    """Each error's source line was found by splitting the whole file again: minutes for big specs."""
    from dagnet.errors import Loc, SpecErrors
    from dagnet.spec.cli import render_error
    path = write(tmp_path, "many.yaml", b"".join(b"  n%d: {op: relu, in: x}\n" % i for i in range(10_000)))
    errors = SpecErrors([SpecError(f"node `n{i}` reaches no output", Loc(str(path), i + 1, 3)) for i in range(10_000)])
    started = time.monotonic()
    text = render_error(errors)
    assert time.monotonic() - started < 2
    assert text.count("\n      n9999: {op: relu, in: x}\n      ^") == 1


# -- numbers Python will not read ----------------------------------------------------------
@pytest.mark.parametrize("literal", ["1" * 5000, "0x" + "f" * 200, "1." + "5" * 300])
def test_a_number_of_thousands_of_digits_in_yaml(spec_file, capsys, literal):
    path = spec_file(f"dagnet: 1\nparams: {{w: {literal}}}\n" + TINY_YAML[10:])
    for command in ("check", "fmt", "convert"):
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:2:13", f"a number of {len(literal):,} characters; numbers have at most 100")


@pytest.mark.parametrize("text, col, message", [
    ("param w = " + "1" * 5000, 11, "a number of 5,000 characters"),
    ("param w = 1e999", 11, "`1e999` is too large for a number: it overflows to infinity"),
    ("param w = {" + "1" * 5000 + ": 1}", 12, "a number of 5,000 characters"),
])
def test_a_number_python_cannot_read_in_the_dsl(spec_file, capsys, text, col, message):
    path = spec_file(text + "\n" + TINY_DAG, "model.dag")
    for command in ("check", "fmt", "convert"):
        status, err = run_cli(capsys, command, path)
        assert status == 1
        assert_located(err, f"{path}:1:{col}", message)


def test_a_long_repeat_count_in_the_dsl(spec_file, capsys):
    path = spec_file("input x[3]\na = x -> relu * " + "9" * 5000 + "\noutput a\n", "model.dag")
    status, err = run_cli(capsys, "check", path)
    assert status == 1
    assert_located(err, f"{path}:2:17", "a number of 5,000 characters")


@pytest.mark.parametrize("value, tag", [("!!binary aGVsbG8=", "binary"), ("!!set {a, b}", "set"),
                                        ("!!omap [a: 1]", "omap"), ("!!pairs [a: 1]", "pairs")])
@pytest.mark.parametrize("command", ["check", "convert"])
def test_yaml_types_no_spec_is_made_of_are_located_errors(spec_file, capsys, value, tag, command):
    path = spec_file(f"dagnet: 1\nname: {value}\n" + TINY_YAML[10:])
    status, err = run_cli(capsys, command, path)
    assert status == 1
    assert_located(err, f"{path}:2:7", f"a YAML `{tag}` is not a spec value")


def test_a_date_is_text(spec_file):
    import dagnet
    spec = dagnet.parse(spec_file("dagnet: 1\ndoc: 2001-12-14\n" + TINY_YAML[10:]))
    assert spec.doc == "2001-12-14"
