"""TikZ from Graphviz's own layout: its shapes and splines, with LaTeX setting the text.

The layout engine's JSON output carries every drawing operation (xdot:
polygons, ellipses, Bézier splines, text positions). They are replayed here as
TikZ paths in big points, so the picture is exactly the layout; only the text
is left to LaTeX, in the document's fonts and math, centred where Graphviz put
it. The layout for .tex is made with text measured 20% wider than Times, the
room Computer Modern, most paper fonts and math need.

The file compiles on its own (``pdflatex figure.tex``) and can be ``\\input``
into a paper (which must load tikz): it detects whether a document is already
open and then emits only the ``tikzpicture``.
"""

from __future__ import annotations


from dagnet.render.dot import PAD_X
from dagnet.render.labels import tex_escape
from dagnet.render.layout import XDOT_STATE, set_state

TEX_TEXT_SCALE = 1.2

def num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".").replace("-0", "-0") if x else "0"


def pt(p) -> str:
    return f"({num(p[0])},{num(p[1])})"


class TikzWriter:
    def __init__(self, layout: dict, tex_of: dict[str, str], title: str, tex_family: str,
                 node_tex: dict[str, str] | None = None):
        self.layout = layout
        self.tex_of = tex_of            # Graphviz text -> LaTeX text
        self.node_tex = node_tex or {}  # node id -> its whole label in LaTeX (model view)
        self.title = title
        self.tex_family = tex_family
        self.colors: dict[str, str] = {}
        self.lines: list[str] = []

    # -- colours and styles ---------------------------------------------------
    def color(self, value: str) -> str | None:
        """A colour name for TikZ, or None for transparent."""
        if not value.startswith("#"):
            return value if value in ("black", "white", "gray", "red", "blue") else "black"
        hexa = value[1:].lower()
        if len(hexa) == 8:
            if hexa[6:] == "00":
                return None
            hexa = hexa[:6]
        if hexa not in self.colors:
            self.colors[hexa] = f"dn{hexa}"
        return self.colors[hexa]

    def pen_opts(self, state: dict) -> list[str]:
        opts = [f"line width={num(state['width'])}bp"]
        if state["dash"]:
            opts.append(state["dash"])
        return opts

    # -- xdot operations --------------------------------------------------------
    def replay(self, ops: list[dict] | None, node_text: bool = False, room: float | None = None) -> None:
        """Replay one object's drawing operations, in order."""
        state = dict(XDOT_STATE)
        for op in ops or []:
            kind = op["op"]
            if set_state(state, op, self.style):
                continue
            if kind in ("p", "P", "b", "B", "L"):
                self.path(kind, op["points"], state)
            elif kind in ("e", "E"):
                self.ellipse(kind, op["rect"], state)
            elif kind == "T":
                self.text(op, state, node_text, room)

    @staticmethod
    def style(state: dict, style: str) -> None:
        if style == "dashed":
            state["dash"] = "dash pattern=on 3bp off 2bp"
        elif style == "dotted":
            state["dash"] = "dash pattern=on 0.8bp off 1.6bp"
        elif style == "solid":
            state["dash"] = None
        elif style == "bold":
            state["width"] = max(2.0, state["width"] * 2)
        elif style.startswith("setlinewidth("):
            state["width"] = float(style[len("setlinewidth("):-1])

    def path(self, kind: str, points: list, state: dict) -> None:
        if kind in ("b", "B"):
            segs = [pt(points[0])]
            for i in range(1, len(points) - 2, 3):
                segs.append(f".. controls {pt(points[i])} and {pt(points[i + 1])} .. {pt(points[i + 2])}")
            body = " ".join(segs)
        else:
            body = " -- ".join(pt(p) for p in points)
        closed = kind in ("p", "P", "B")
        if closed and kind != "B":
            body += " -- cycle"
        elif kind == "B":
            body += " -- cycle"
        pen, fill = self.color(state["pen"]), self.color(state["fill"])
        opts = []
        if kind in ("P", "B") and fill:
            opts.append(f"fill={fill}")
        if pen:
            opts += [f"draw={pen}"] + self.pen_opts(state)
        if not opts:
            return
        self.lines.append(f"\\path[{', '.join(opts)}] {body};")

    def ellipse(self, kind: str, rect: list, state: dict) -> None:
        x, y, w, h = rect
        pen, fill = self.color(state["pen"]), self.color(state["fill"])
        opts = []
        if kind == "E" and fill:
            opts.append(f"fill={fill}")
        if pen:
            opts += [f"draw={pen}"] + self.pen_opts(state)
        if opts:
            self.lines.append(f"\\path[{', '.join(opts)}] ({num(x)},{num(y)}) ellipse "
                              f"[x radius={num(w)}bp, y radius={num(h)}bp];")

    def text(self, op: dict, state: dict, node_text: bool, room: float | None = None) -> None:
        (x, y), align, width, text = op["pt"], op["align"], float(op.get("width", 0)), op["text"]
        if not text.strip():
            return
        if node_text and align == "l":              # node lines are centred: let LaTeX's width
            x, align = x + width / 2, "c"           # grow both ways from Graphviz's centre
        anchor = {"l": "base west", "c": "base", "r": "base east"}[align]
        size = state["size"]
        font = f"\\fontsize{{{num(size)}}}{{{num(size * 1.2)}}}\\selectfont"
        if state["bold"]:
            font += "\\bfseries"
        if state["italic"]:
            font += "\\itshape"
        tex = self.tex_of.get(text, tex_escape(text))
        if room:                                    # LaTeX's fonts run wider still: keep to the box
            tex = f"\\dagnetfit{{{num(room)}}}{{{tex}}}"
        color = self.color(state["pen"]) or "black"
        self.lines.append(f"\\node[anchor={anchor}, inner sep=0, text={color}, font={{{font}}}] "
                          f"at ({num(x)},{num(y)}) {{{tex}}};")

    def whole_label(self, n: dict) -> None:
        """A variable's name as one piece of math, centred on the node (y_1, not y and 1)."""
        size = next((float(op["size"]) for op in n.get("_ldraw_", []) if op["op"] == "F"), 9.0)
        x, y = (float(v) for v in n["pos"].split(","))
        font = f"\\fontsize{{{num(size)}}}{{{num(size * 1.2)}}}\\selectfont"
        self.lines.append(f"\\node[inner sep=0, font={{{font}}}] at ({num(x)},{num(y)}) "
                          f"{{{self.node_tex[n['name']]}}};")

    @staticmethod
    def room(n: dict) -> float | None:
        """Width in points a line of text has inside node ``n``: its box less the padding
        (a parallelogram's slant and a 3-d box's depth taken off too)."""
        try:
            width = float(n["width"]) * 72
        except (KeyError, ValueError):
            return None
        shape = n.get("shape", "box")
        if shape == "plaintext":                    # sized to its text already (legend, caption)
            return width
        if shape in ("circle", "ellipse", "doublecircle"):
            return 0.72 * width                     # the chord a line of text crosses
        cut = {"parallelogram": 0.35 * float(n.get("height", 0)) * 72, "box3d": 4.0}.get(shape, 0.0)
        return max(4.0, width - 2 * PAD_X - cut)

    # -- the picture --------------------------------------------------------------
    def write(self) -> str:
        lay = self.layout
        n_sub = int(lay.get("_subgraph_cnt", 0))
        objects = lay.get("objects", [])
        clusters, nodes = objects[:n_sub], objects[n_sub:]
        for c in clusters:                          # backgrounds first, then edges, then nodes
            self.replay(c.get("_draw_"))
            self.replay(c.get("_ldraw_"))
        for e in lay.get("edges", []):
            for key in ("_draw_", "_hdraw_", "_tdraw_", "_ldraw_"):
                self.replay(e.get(key))
        for n in nodes:
            self.replay(n.get("_draw_"))
            if n["name"] in self.node_tex:
                self.whole_label(n)
            else:
                self.replay(n.get("_ldraw_"), node_text=True, room=self.room(n))
        self.replay(lay.get("_ldraw_"))             # the legend (the graph's label)
        x0, y0, x1, y1 = (float(v) for v in lay["bb"].split(","))
        x0, y0, x1, y1 = x0 - 3, y0 - 3, x1 + 3, y1 + 3    # LaTeX's text may run a little wider
        colors = [f"\\definecolor{{{name}}}{{HTML}}{{{hexa.upper()}}}"
                  for hexa, name in sorted(self.colors.items())]
        body = "\n".join(self.lines)
        limit = getattr(self, "limit", None)
        place = ("a figure* across both columns" if limit and limit > 4 * 72 else "a figure in one column")
        limit_text = f"{limit:.0f} bp" if limit else "its natural width"
        return TEMPLATE.format(title=self.title, limit=limit_text, place=place, width=num(x1 - x0), colors="\n".join(colors), body=body,
                               family=self.tex_family, w=num(x1 - x0 + 4), h=num(y1 - y0 + 4),
                               x0=num(x0), y0=num(y0), x1=num(x1), y1=num(y1))


TEMPLATE = r"""%% {title}: drawn by `dagnet render`, laid out by Graphviz, text set by LaTeX.
%% width: {width} bp (at most {limit}: {place})
%% Compile on its own (pdflatex/lualatex this file), or \input it into a paper
%% that loads tikz: it then emits only the picture, in the paper's fonts.
\expandafter\ifx\csname @twoclasseserror\endcsname\documentclass
  \let\dagnetend\relax
\else
  \documentclass{{article}}
  \usepackage{{tikz}}
  \usepackage[paperwidth={w}bp, paperheight={h}bp, margin=0pt]{{geometry}}
  \pagestyle{{empty}}
  \def\dagnetend{{\end{{document}}}}
  \begin{{document}}\noindent
\fi
\providecommand\dagnetfit[2]{{\setbox0\hbox{{#2}}\ifdim\wd0>#1bp\typeout{{dagnet: text fitted to #1bp}}\resizebox{{#1bp}}{{!}}{{\box0}}\else\box0\fi}}%
\begingroup\setbox0\hbox{{%
\begin{{tikzpicture}}[x=1bp, y=1bp, font={family}, line join=round]
{colors}
\useasboundingbox ({x0},{y0}) rectangle ({x1},{y1});
{body}
\end{{tikzpicture}}}}%
%% a line narrower than the picture scales it to the line (never an overfull box)
\ifdim\wd0>\linewidth\resizebox{{\linewidth}}{{!}}{{\box0}}\else\box0\fi\endgroup%
\dagnetend
"""


def to_tikz(layout: dict, tex_of: dict[str, str], title: str, tex_family: str = "\\rmfamily",
            node_tex: dict[str, str] | None = None, limit: float | None = None) -> str:
    writer = TikzWriter(layout, tex_of, title, tex_family, node_tex)
    writer.limit = limit
    return writer.write()
