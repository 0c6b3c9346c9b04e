"""``dagnet render``: the subcommand, registered on the main CLI's subparsers.

    # dagnet/cli.py
    from dagnet.render.cli import add_commands
    add_commands(sub)

Spec errors (SpecError) propagate to the main CLI, which prints them; a missing
tool (RenderError) is reported here with what to install, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Draw the model graph as a figure for a paper or slides. The format comes from
the suffix of -o: .svg, .png, .pdf, .dot (Graphviz source), .json (the layout)
or .tex (TikZ: Graphviz's layout, text set by LaTeX; compiles on its own or can
be \\input into a paper that loads tikz). The same spec always gives the same
bytes.

Two views: `arch` draws layers as boxes coloured by family, with output shape
and parameter count, merges (add, concat) as small marks and the input and
outputs set apart; `model` draws the stochastic part (CRFs) as a factor graph:
variables as circles, observed ones shaded, factors as squares, in a plate.
`auto` (the default) picks `model` when the spec has a CRF node.

Blocks collapse to one node and identical repeats fold into one node marked
xN; --depth N opens N levels of blocks as clusters, --expand opens all.

Layout: Graphviz's `dot` when installed, else the `graphviz-pure` engine that
comes with dagnet. PDF is written by dagnet itself from the layout, with the
bundled Liberation faces embedded (the same bytes every run); `--engine dot`
asks for system Graphviz's own PDF instead.
"""

EXAMPLES = """\
examples:
  dagnet render specs/resnet50.yaml -o resnet50.pdf
  dagnet render specs/fcn8s.yaml -o fcn8s.pdf --width page
  dagnet render specs/resnet50.yaml -o resnet50.tex --depth 2 --rankdir LR
  dagnet render specs/densenet121.yaml -o densenet.svg --theme slides --no-params
  dagnet render specs/unet.yaml -o unet.png --dim H=572 --dim W=572
"""


def _pairs(pairs: list[str] | None, flag: str, numbers: bool = False) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or (numbers and not value.strip().isdigit()):
            kind = "NAME=INTEGER" if numbers else "KEY=VALUE"
            raise SystemExit(f"dagnet: {flag} expects {kind}, found `{pair}`")
        out[key.strip()] = int(value) if numbers else value.strip()
    return out


def cmd_render(args) -> int:
    from dagnet.loader import load
    from dagnet.render import RenderError, render
    ir = load(Path(args.spec), _pairs(args.set, "--set"))       # SpecError: the main CLI prints it
    try:
        path = render(ir, args.output, view=args.view, depth=args.depth, expand=args.expand,
                      rankdir=args.rankdir, theme=args.theme, shapes=not args.no_shapes,
                      params=not args.no_params, legend=not args.no_legend,
                      dims=_pairs(args.dim, "--dim", numbers=True), bw=args.bw, engine=args.engine,
                      width=args.width, labels=args.labels)
    except RenderError as exc:
        print(f"dagnet render: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def add_commands(sub) -> None:
    """Register ``render`` on an argparse subparsers object."""
    p = sub.add_parser("render", help="Draw the model graph (svg, png, pdf, dot, json, TikZ).",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="spec file (.yaml or .dag)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="figure to write: .svg .png .pdf .dot .json or .tex")
    p.add_argument("--view", choices=("auto", "arch", "model"), default="auto",
                   help="arch: layers and blocks; model: the CRFs as a graphical model; "
                        "auto: model if the spec has a CRF, else arch (default)")
    p.add_argument("--depth", type=int, default=0, metavar="N",
                   help="open N levels of blocks as clusters (default 0: every top-level "
                        "node is one box)")
    p.add_argument("--expand", action="store_true",
                   help="open every block and fold nothing: one box per layer")
    p.add_argument("--rankdir", choices=("TB", "LR", "BT", "RL"), default="TB",
                   help="flow top to bottom (TB, default: a column figure) or left to right "
                        "(LR: a wide figure, labels reflowed into narrow boxes)")
    p.add_argument("--theme", choices=("paper", "slides"), default="paper",
                   help="paper: serif, small, greyscale-safe, sized to a column (default); "
                        "slides: sans-serif, large, colourful")
    p.add_argument("--width", metavar="W",
                   help="the widest the figure may be: column (3.25 in), page (6.75 in) or a length "
                        "(3.5in, 240pt, 8.5cm); default column when flowing down, page across. A figure "
                        "that does not fit is reflowed (narrow boxes, 7 pt titles, left to right), never "
                        "shrunk")
    p.add_argument("--labels", choices=("readers", "names"), default="readers",
                   help="readers: block titles from the spec's doc or a humanised name (default); "
                        "names: the spec's own identifiers")
    p.add_argument("--no-shapes", action="store_true", help="leave output shapes out of the boxes")
    p.add_argument("--no-params", action="store_true", help="leave parameter counts out of the boxes")
    p.add_argument("--no-legend", action="store_true", help="draw no legend")
    p.add_argument("--bw", action="store_true",
                   help="black-and-white line art: observed variables bold instead of shaded")
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="show sizes for a symbolic input size, e.g. --dim H=224 (repeatable); "
                        "without it sizes read H/4, W/4")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec parameter, e.g. --set classes=5 (repeatable)")
    p.add_argument("--engine", choices=("auto", "dot", "graphviz-pure"), default="auto",
                   help="layout engine: Graphviz's dot if installed, else graphviz-pure (default auto)")
    p.set_defaults(func=cmd_render)
