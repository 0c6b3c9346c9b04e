"""``dagnet fmt`` and ``dagnet convert``: the text DSL's commands.

:func:`add_commands` registers them on the main CLI's subparsers; every
command is also a plain function (:func:`format_text`, :func:`convert`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from dagnet.errors import Loc, SpecError, SpecErrors
from dagnet.spec.dsl import parse_dsl
from dagnet.spec.dsl_errors import excerpt
from dagnet.spec.printer import scan_notes, spec_imports, to_dsl
from dagnet.spec.source import FORMATS, display_text, read_source
from dagnet.spec.yaml_printer import to_yaml
from dagnet.spec.yaml_loader import parse_yaml_spec


def _format_of(path: Path) -> str:
    """``"dag"`` or ``"yaml"``; unlike loading, fmt and convert refuse any other suffix."""
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise SpecError(f"`{path}` is neither a .dag nor a .yaml file", Loc(str(path), 0, 0),
                        "name DSL files `*.dag` and YAML files `*.yaml`")
    return fmt


def format_text(text: str, path: Path) -> str:
    """The canonical form of a spec file's text (DSL or YAML, by suffix), comments kept."""
    if _format_of(path) == "dag":
        spec = parse_dsl(text, str(path), library=True, imports=False)
        return to_dsl(spec, scan_notes(text))
    return to_yaml(_load_yaml(path, text), scan_notes(text, yaml_syntax=True))


def _load_yaml(path: Path, text: str):
    """A YAML spec or block library, keeping a library's `doc` (which the loader drops)."""
    spec = parse_yaml_spec(text, str(path), library=True)
    if not spec.doc and not spec.nodes:
        data = yaml.safe_load(text)
        if isinstance(data, dict) and data.get("doc"):
            spec.doc = str(data["doc"])
    return spec


def convert(source: Path, target_format: str, out_dir: Path | None = None) -> str:
    """``source`` (DSL or YAML) as text in ``target_format``, comments kept.

    Import paths are rewritten relative to ``out_dir`` (where the result will
    live) and point at the target format's version of an imported file where
    one exists next to it.
    """
    source = Path(source)
    text, _ = read_source(source)
    from_dag = _format_of(source) == "dag"
    spec = parse_dsl(text, str(source), library=True) if from_dag else _load_yaml(source, text)
    out_dir = Path(out_dir) if out_dir is not None else source.parent
    imports = [_import_path(source, path, target_format, out_dir) for path in spec_imports(spec)]
    notes = scan_notes(text, yaml_syntax=not from_dag)
    return to_dsl(spec, notes, imports) if target_format == "dag" else to_yaml(spec, notes, imports)


def _import_path(source: Path, path: str, target_format: str, out_dir: Path) -> str:
    target = (source.parent / path).resolve()
    suffixes = [".dag"] if target_format == "dag" else [".yaml", ".yml"]
    twin = next((target.with_suffix(s) for s in suffixes if target.with_suffix(s).is_file()), None)
    return Path(os.path.relpath(twin or target, out_dir.resolve())).as_posix()


def render_error(exc: SpecError) -> str:
    """``file:line:col: error: message``, the source line with a caret, and the hint."""
    texts: dict[str, list[str] | None] = {}
    parts = []
    for err in exc.errors if isinstance(exc, SpecErrors) else [exc]:
        message = err.message
        if "\n    " not in message and err.loc.line > 0:
            if err.loc.file not in texts:
                texts[err.loc.file] = display_text(err.loc.file)
            if texts[err.loc.file] is not None:
                message += excerpt(texts[err.loc.file], err.loc)
        parts.append(str(SpecError(message, err.loc, err.hint)))
    return "\n".join(parts)


def cmd_fmt(args) -> int:
    status = 0
    for name in args.files:
        path = Path(name)
        try:
            text, _ = read_source(path)
            out = format_text(text, path)
        except SpecError as exc:
            print(render_error(exc), file=sys.stderr)
            status = 1
            continue
        if args.check:
            if out != text:
                print(f"{name}: not in canonical form (run `dagnet fmt -w {name}`)", file=sys.stderr)
                status = 1
        elif args.write:
            if out != text:
                path.write_text(out, encoding="utf-8")
                print(f"formatted {name}")
        else:
            sys.stdout.write(out)
    return status


def cmd_convert(args) -> int:
    source = Path(args.source)
    try:
        from_format = _format_of(source)
        if args.output and args.output != "-":
            output = Path(args.output)
            target_format = _format_of(output)
            if target_format == from_format:
                raise SpecError(f"`{source}` and `{output}` are both {from_format} files",
                                Loc(str(source), 0, 0), "to reformat a file, run `dagnet fmt`")
            text = convert(source, target_format, output.parent)
        else:
            output, target_format = None, "yaml" if from_format == "dag" else "dag"
            text = convert(source, target_format)
    except SpecError as exc:
        print(render_error(exc), file=sys.stderr)
        return 1
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    return 0


def add_commands(sub) -> None:
    """Register ``fmt`` and ``convert`` on an argparse subparsers object."""
    text = ("Print a spec in canonical form: the DSL for .dag files, YAML for .yaml files. "
            "Comments are kept; formatting twice changes nothing.")
    p = sub.add_parser("fmt", help="Print a spec in canonical form (or check or rewrite it).",
                       description=text)
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files (.dag or .yaml)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="print nothing; exit 1 if a file is not in canonical form (for CI)")
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    p.set_defaults(func=cmd_fmt)

    text = ("Convert a spec between YAML and the text DSL; the direction comes from the "
            "suffixes (.yaml <-> .dag). Both forms give the same model; comments are kept.")
    p = sub.add_parser("convert", help="Convert a spec between YAML and the text DSL.",
                       description=text)
    p.add_argument("source", metavar="A", help="the spec to convert (.dag or .yaml)")
    p.add_argument("-o", "--output", metavar="B",
                   help="where to write it (.yaml or .dag); default: print the other format")
    p.set_defaults(func=cmd_convert)
