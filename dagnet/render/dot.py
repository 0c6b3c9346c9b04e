"""Figure -> DOT text, deterministic: the same spec gives the same bytes.

Labels are HTML-like (a bold title, regular op text, small grey details). Each
node's size is measured here with the fonts' own metrics (metrics.py) and given
to Graphviz as a minimum, so a box holds its text even where Graphviz's built-in
estimate is short (it counts a non-ASCII character such as × as a space).
"""

from __future__ import annotations

import html
import math

from dagnet.render.drawing import FCluster, Figure, FNode
from dagnet.render.labels import Line
from dagnet.render.metrics import text_width
from dagnet.render.styles import Theme

LINE_SPACING = 1.2          # Graphviz's line height is 1.2 x the font size
PAD_X, PAD_Y = 4.0, 2.5     # points between a label and its box
LEGEND_SWATCH = (14, 9)     # points
TEX_MATH_SCALE = 1.2        # detail lines in .tex, beyond the text scale: 7 pt math runs wider


def q(text: str) -> str:
    """A quoted DOT id or string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fmt(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


class DotWriter:
    def __init__(self, fig: Figure, theme: Theme, rankdir: str = "TB", text_scale: float = 1.0,
                 legend_columns: int | None = None, fontname: str | None = None):
        self.fig = fig
        self.legend_columns = legend_columns
        self.fontname = fontname or theme.font     # system Graphviz: the bundled face's own name
        self.theme = theme
        self.rankdir = rankdir
        self.text_scale = text_scale        # > 1 leaves room for LaTeX's wider fonts (.tex)

    # -- text -----------------------------------------------------------------
    def size_of(self, line: Line) -> float:
        t = self.theme
        return {"title": t.title_size, "op": t.title_size, "mark": t.title_size,
                "detail": t.detail_size, "cluster": t.cluster_size}.get(line.role, t.title_size)

    def width(self, line: Line) -> float:
        bold = line.role == "title"
        scale = self.text_scale
        if scale > 1 and line.role == "detail":
            scale *= TEX_MATH_SCALE             # sizes are math in LaTeX, set in cmmi7's wide glyphs
        return text_width(line.text, self.theme.font, self.size_of(line), bold=bold) * scale

    def html_line(self, line: Line) -> str:
        text = line.html if line.html is not None else html.escape(line.text, quote=False)
        if line.role == "title":
            return f"<B>{text}</B>"
        if line.role == "detail":
            return (f'<FONT POINT-SIZE="{fmt(self.theme.detail_size)}" '
                    f'COLOR="{self.theme.detail_color}">{text}</FONT>')
        if line.role == "cluster":
            return f'<FONT POINT-SIZE="{fmt(self.theme.cluster_size)}">{text}</FONT>'
        return text

    def label(self, lines: list[Line]) -> str:
        if not any(ln.text for ln in lines):
            return '""'             # old Graphviz rejects an empty HTML label
        return "<" + "<BR/>".join(self.html_line(ln) for ln in lines) + ">"

    def box_size(self, node: FNode) -> tuple[float, float]:
        """(width, height) in points: the label plus padding (Graphviz adds a slant's room itself)."""
        if node.size:
            return node.size
        w = max((self.width(ln) for ln in node.lines), default=0) + 2 * PAD_X
        h = sum(self.size_of(ln) * LINE_SPACING for ln in node.lines) + 2 * PAD_Y
        if self.theme.look(node.kind).shape == "box3d":
            w, h = w + 4, h + 4
        return w, h

    # -- the graph --------------------------------------------------------------
    def node_stmt(self, node: FNode) -> str:
        look = self.theme.look(node.kind)
        w, h = self.box_size(node)
        styles = (["filled"] if look.fill != "none" else []) + [s for s in look.style.split(",")
                                                                if s and s != "bold"]
        attrs = {"id": node.id, "label": self.label(node.lines), "shape": look.shape,
                 "style": ",".join(styles), "fillcolor": look.fill if look.fill != "none" else "white",
                 "width": fmt(w / 72), "height": fmt(h / 72)}
        if node.size and look.shape != "plaintext":
            attrs["fixedsize"] = "true"
            if look.shape == "doublecircle":    # the outer ring is drawn 4 pt outside the size
                attrs["width"], attrs["height"] = fmt((w - 8) / 72), fmt((h - 8) / 72)
        if "bold" in look.style:           # an explicit penwidth: `style=bold` would not beat it
            attrs["penwidth"] = fmt(max(1.2, 2 * self.theme.pen))
        if node.output:
            attrs["peripheries"] = "2"
        if node.pos is not None:
            attrs["pos"] = f"{fmt(node.pos[0])},{fmt(node.pos[1])}!"
        return f"{q(node.id)} [{self.attrs(attrs)}];"

    @staticmethod
    def attrs(attrs: dict) -> str:
        parts = []
        for k, v in attrs.items():
            # only a label is HTML (made by label(), its text escaped there); every other value,
            # an id such as `a<b>` included, is a quoted string
            html_label = k == "label" and isinstance(v, str) and v.startswith("<") and v.endswith(">")
            value = v if html_label or (k == "label" and v == '""') else q(str(v))
            parts.append(f"{k}={value}")
        return ", ".join(parts)

    def cluster_stmts(self, cluster: FCluster, indent: str) -> list[str]:
        t = self.theme
        style = "rounded" if cluster.kind == "group" else "solid"
        out = [f"{indent}subgraph {q(cluster.id)} {{",
               f"{indent}  graph [label={self.title(cluster)}, labeljust=l, labelloc=t, "
               f"style={q(style)}, color={q(t.cluster_color)}, fontsize={fmt(t.cluster_size)}, "
               f"penwidth={fmt(t.pen)}, margin=6];"]
        out += [f"{indent}  {q(n)};" for n in cluster.nodes]
        for sub in cluster.clusters:
            out += self.cluster_stmts(sub, indent + "  ")
        out.append(f"{indent}}}")
        return out

    def title(self, cluster: FCluster) -> str:
        """A cluster's title, broken into lines (at ': ', ' – ', ', ', then spaces) that stay in
        the left half of the cluster, clear of the main path down its middle."""
        line = cluster.label
        room = max(40.0, self.inner_width(cluster) / 2 - 8)
        if self.width(line) <= room or self.fig.pinned:
            return self.label([line])
        pieces = wrap_words(line.text, lambda text: self.width(Line(text, "", "cluster")), room)
        lines = [html.escape(p, quote=False) for p in pieces]
        size = fmt(self.theme.cluster_size)
        return ("<" + "".join(f'<FONT POINT-SIZE="{size}">{p}</FONT><BR ALIGN="LEFT"/>' for p in lines) + ">")

    def inner_width(self, cluster: FCluster) -> float:
        """The widest box in a cluster (and its clusters), as measured here."""
        widths = [self.box_size(self.fig.nodes[n])[0] for n in cluster.nodes if n in self.fig.nodes]
        widths += [self.inner_width(c) + 12 for c in cluster.clusters]
        return max(widths, default=0.0)

    def legend_label(self) -> str:
        """The legend as an HTML table: a swatch drawn as the family is, and its words."""
        t = self.theme
        cols = self.legend_columns or (2 if self.rankdir in ("TB", "BT") else 4)
        cells = []
        for key, words in self.fig.legend:
            width = text_width(words, t.font, t.detail_size) * self.text_scale + 2
            cells.append(self.swatch(key) + '<TD WIDTH="3"></TD>' + f'<TD ALIGN="LEFT" WIDTH="{math.ceil(width)}">'
                         f'<FONT POINT-SIZE="{fmt(t.detail_size)}">{html.escape(words, quote=False)}</FONT></TD>')
        rows = ["<TR>" + "".join(cells[i:i + cols]) + "</TR>" for i in range(0, len(cells), cols)]
        return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1">'
                + "".join(rows) + "</TABLE>>")

    def swatch(self, key: str) -> str:
        w, h = LEGEND_SWATCH
        if key.startswith("mark:"):
            return (f'<TD BORDER="1" STYLE="rounded" WIDTH="{h + 1}" HEIGHT="{h + 1}" FIXEDSIZE="TRUE">'
                    f'<FONT POINT-SIZE="{fmt(self.theme.detail_size)}">{html.escape(key[5:])}</FONT></TD>')
        if key == "note":
            return f'<TD WIDTH="{w}" HEIGHT="{h}" FIXEDSIZE="TRUE"></TD>'
        if key == "output":
            return (f'<TD BORDER="1" CELLPADDING="1"><TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" '
                    f'WIDTH="{w - 4}" HEIGHT="{h - 4}" FIXEDSIZE="TRUE"><TR><TD></TD></TR></TABLE></TD>')
        look = self.theme.look(key)
        style = ' STYLE="rounded"' if "rounded" in look.style or look.shape in ("ellipse", "circle") \
            else ' STYLE="dashed"' if "dashed" in look.style else ""
        return (f'<TD BORDER="1" BGCOLOR="{look.fill}"{style} WIDTH="{w}" HEIGHT="{h}" '
                f'FIXEDSIZE="TRUE"></TD>')

    def write(self) -> str:
        t = self.theme
        fig = self.fig
        graph = {"rankdir": self.rankdir, "fontname": self.fontname, "fontsize": fmt(t.detail_size),
                 "nodesep": fmt(t.nodesep), "ranksep": fmt(t.ranksep), "newrank": "true",
                 "outputorder": "edgesfirst", "pad": "0.04", "margin": "0", "bgcolor": "white"}
        if fig.pinned:
            graph = {"fontname": self.fontname, "fontsize": fmt(t.detail_size), "outputorder": "edgesfirst",
                     "pad": "0.04", "margin": "0", "bgcolor": "white", "splines": "false"}
        if t.size:
            graph["size"] = t.size[1] if self.rankdir in ("LR", "RL") else t.size[0]
        if len(fig.edges) > 1.5 * len(fig.nodes):
            graph["concentrate"] = "true"   # dense edges: bundle each fan-out (and lay out 10x faster)
        if fig.legend:
            graph.update(label=self.legend_label(), labelloc="b", labeljust="r")
        kind = "graph" if fig.pinned else "digraph"
        out = [f"// {fig.name}: {fig.view} view, drawn by `dagnet render`",
               f"{kind} {q(fig.name)} {{",
               f"  graph [{self.attrs(graph)}];",
               f"  node [fontname={q(self.fontname)}, fontsize={fmt(t.title_size)}, penwidth={fmt(t.pen)}, "
               f'margin="0.02,0.01"];',
               f"  edge [penwidth={fmt(t.pen)}, arrowsize=0.5, color={q(t.edge_color)}];"]
        out += ["  " + self.node_stmt(n) for n in fig.nodes.values()]
        for cluster in fig.clusters:
            out += self.cluster_stmts(cluster, "  ")
        arrow = "--" if fig.pinned else "->"
        for e in fig.edges:
            attrs = {}
            if e.kind == "arrow":
                attrs["dir"] = "forward"
            elif e.kind == "feed":             # the network to each of many potentials
                attrs.update(dir="forward", color=t.skip_color, penwidth=fmt(t.pen * 0.75))
            elif e.kind == "skip":
                attrs.update(color=t.skip_color, weight="1")
            elif e.kind == "data":
                attrs["weight"] = "4"
            if e.points and fig.pinned:         # a curve drawn as given (neato -n2 keeps an edge's pos)
                pts = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in e.points)
                if attrs.get("dir") == "forward":   # the arrowhead: from the last control point to its tip
                    tip = e.points[-1]
                    (ax, ay), (bx, by) = e.points[-2], tip
                    d = math.hypot(bx - ax, by - ay) or 1.0
                    back = (bx - (bx - ax) / d * 5, by - (by - ay) / d * 5)
                    pts = (f"e,{fmt(tip[0])},{fmt(tip[1])} "
                           + " ".join(f"{fmt(x)},{fmt(y)}" for x, y in (*e.points[:-1], back)))
                attrs["pos"] = pts
            out.append(f"  {q(e.tail)} {arrow} {q(e.head)}" + (f" [{self.attrs(attrs)}]" if attrs else "") + ";")
        out.append("}")
        return "\n".join(out) + "\n"


def wrap_words(text: str, width, room: float) -> list[str]:
    """Greedy word wrap of ``text`` to ``room`` points; a dash stays with the word before it,
    ``× 3`` stays whole, and the name before a colon ends the first line."""
    tokens: list[str] = []
    for word in text.split(" "):
        if tokens and (word in ("\u2013", "\u00d7") or tokens[-1].endswith("\u00d7")):
            tokens[-1] += " " + word
        else:
            tokens.append(word)
    lines: list[str] = []
    for token in tokens:
        if lines and not lines[-1].endswith(":") and width(lines[-1] + " " + token) <= room:
            lines[-1] += " " + token
        else:
            lines.append(token)
    return lines


def to_dot(fig: Figure, theme: Theme, rankdir: str = "TB", text_scale: float = 1.0,
           legend_columns: int | None = None, fontname: str | None = None) -> str:
    return DotWriter(fig, theme, rankdir, text_scale, legend_columns, fontname).write()
