"""``dagnet view`` and ``dagnet diff``: the commands (dagnet/cli.py registers them)."""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path


def _dims(pairs) -> dict:
    from dagnet.cli import _dims as parse_dims
    return parse_dims(pairs)


def _overrides(pairs) -> dict:
    from dagnet.cli import _overrides as parse_overrides
    return parse_overrides(pairs)


def _spec_path(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise SystemExit(f"dagnet: no such spec file: {text}")
    return path


def cmd_view(args) -> int:
    from dagnet.view import view_html
    spec = _spec_path(args.spec)
    dims, overrides = _dims(args.dim), _overrides(args.set)
    if args.serve:
        from dagnet.view.serve import serve
        return serve(spec, dims, overrides, args.port, args.open)
    out = Path(args.output or spec.with_suffix(".html").name)
    out.write_text(view_html(spec, dims, overrides), encoding="utf-8")
    print(f"wrote {out}")
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0


def cmd_diff(args) -> int:
    from dagnet.errors import SpecError
    from dagnet.spec.cli import render_error
    from dagnet.view import diff_specs
    for text in (args.a, args.b):
        if not Path(text).is_file():
            print(f"dagnet: no such spec file: {text}", file=sys.stderr)
            return 2
    a, b = Path(args.a), Path(args.b)
    try:
        result, html = diff_specs(a, b, _dims(args.dim), _overrides(args.set))
    except SpecError as exc:
        print(render_error(exc), file=sys.stderr)
        return 2                    # like diff(1): trouble is 2, different is 1
    print(result.text())
    if args.output:
        Path(args.output).write_text(html, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
        if args.open:
            webbrowser.open(Path(args.output).resolve().as_uri())
    return 0 if result.equal else 1


def add_commands(sub) -> None:
    help_text = "Explore a model in the browser: one self-contained HTML file."
    p = sub.add_parser("view", help=help_text, description=help_text)
    p.add_argument("spec", help="spec file (.yaml or .dag)")
    p.add_argument("-o", "--output", metavar="FILE", help="the HTML file (default: SPEC's name .html, here)")
    p.add_argument("--open", action="store_true", help="open it in the system browser")
    p.add_argument("--serve", action="store_true",
                   help="serve it on localhost and re-render when the spec is saved")
    p.add_argument("--port", type=int, default=8765, help="port for --serve (default 8765; 0: any free one)")
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="give a symbolic input size, e.g. --dim H=224, for shapes and MACs (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec parameter, e.g. --set classes=5 (repeatable)")
    p.set_defaults(func=cmd_view)

    help_text = "Compare two specs node by node: exit 0 when equal, 1 when different."
    p = sub.add_parser("diff", help=help_text, description=help_text)
    p.add_argument("a", help="the old spec")
    p.add_argument("b", help="the new spec")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the comparison as a viewer page")
    p.add_argument("--open", action="store_true", help="open the page (-o) in the system browser")
    p.add_argument("--dim", action="append", metavar="NAME=N", help="symbolic input size (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter of both specs (repeatable)")
    p.set_defaults(func=cmd_diff)
