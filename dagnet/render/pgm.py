"""The graphical-model view: the stochastic part of a model drawn as a factor graph.

Random variables are circles (labels solid, hidden states dashed), observed
ones shaded (or bold in black-and-white line art), deterministic nodes are
diamonds (the network f_θ) and double circles (the potentials φ it computes),
factors are small black squares, and the model sits in a plate over the N
examples. Each CRF is drawn as its structure, unrolled a few steps: a chain
(y₁ y₂ y₃ … y_T), a 3×3 lattice, a binary tree, a clique of five pixels; segments
bracketing runs of frames, a sentence with a dependency tree's arcs curving above it,
a binary bracketing of spans (``OWN_DRAWING``). The
geometry is fixed here (points) and Graphviz only draws it (neato -n2), so the
figures are as regular as a hand-drawn one.
"""

from __future__ import annotations

import math

from dagnet import ops
from dagnet.ir import IR, Node
from dagnet.render.drawing import Figure, FNode
from dagnet.render.labels import Line, nominal_dim, op_title, params_text, tex_escape
from dagnet.render.metrics import text_width

R = 10.0            # variable radius, points
PHI = 10.0          # outer radius of a potential (double circle; its text sits in the inner 6)
FACTOR = 6.5        # factor square side
DX = 56.0           # spacing of a chain
CHAIN = ("1", "2", "3", "\u2026", "T")
SUB_SIZE = 6
MAX_TREE = 15       # a larger tree is drawn as a binary tree of 7
SEQUENCES = ("chain", "hidden", "latent_dynamic")     # drawing kinds (the ``pgm`` facet) over T positions
HIDDEN = ("hidden", "latent_dynamic")                  # their variables are hidden states


def is_field(node: Node) -> bool:
    opdef = ops.get(node.op)
    return opdef is not None and (opdef.family == "field" or opdef.stochastic)


# Structures whose registry facet names a near relative (a segment chain is a chain, a parse a
# tree) but whose drawing is their own: segments over runs of frames, arcs over a sentence, a
# bracketing over spans. Kept here, in the renderer, not as new registry values.
OWN_DRAWING = {"semi_markov_crf": "segments", "dependency_crf": "arcs", "cky_crf": "spans"}
PLANAR = ("grid", "tree", "clique", "segments", "arcs", "spans")    # never narrowed (curves, boxes)


def drawing(node: Node) -> str | None:
    """How a structured node is drawn: its own drawing (``OWN_DRAWING``), else its op's ``pgm``
    facet (None: undeclared)."""
    if node.op in OWN_DRAWING:
        return OWN_DRAWING[node.op]
    opdef = ops.get(node.op)
    return opdef.pgm if opdef else None


def arc_curve(a: tuple, b: tuple, height: float) -> tuple[tuple, tuple]:
    """An arc from ``a`` to ``b`` bulging ``height`` above the higher end, as two cubic Béziers
    meeting at its apex (where the arc's factor sits): de Casteljau's split at t = 1/2."""
    top = max(a[1], b[1]) + height * 4 / 3
    p0, p1, p2, p3 = a, (a[0], top), (b[0], top), b

    def mid(p, q):
        return ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
    q0, q1, q2 = mid(p0, p1), mid(p1, p2), mid(p2, p3)
    r0, r1 = mid(q0, q1), mid(q1, q2)
    apex = mid(r0, r1)
    return (p0, q0, r0, apex), (apex, r1, q2, p3)


def var_line(name: str, index: str = "") -> Line:
    """``y`` with subscript ``index``: HTML for Graphviz (a smaller index, lowered where the
    viewer honours SVG's baseline-shift), math for LaTeX."""
    greek = {"phi": ("\u03c6", "\\phi"), "f": ("f", "f"), "theta": ("\u03b8", "\\theta")}
    text, tex = greek.get(name, (name, name))
    if not index:
        return Line(text, f"${tex}$", "var", f"<I>{text}</I>")
    if index == "\u2026":
        return Line(text + index, f"${tex}_{{\\cdots}}$", "var", f"<I>{text}</I>{_sub(index)}")
    sub_tex = index.replace("\u03b8", "\\theta")
    return Line(text + index, f"${tex}_{{{sub_tex}}}$", "var", f"<I>{text}</I>{_sub(index)}")


def _sub(index: str) -> str:
    italic = index.isalpha() and index.isascii()
    body = f"<I>{index}</I>" if italic else index
    return f'<FONT POINT-SIZE="{SUB_SIZE}"><SUB>{body}</SUB></FONT>'


class ModelBuilder:
    def __init__(self, ir: IR, font: str = "Times-Roman", size: float = 7.5):
        self.ir = ir
        self.font, self.size = font, size
        self.fig = Figure(ir.name, "model", pinned=True)
        self.max_width: float | None = None     # points the figure may take
        self.text_scale = 1.0

    # -- primitives ---------------------------------------------------------------
    def var(self, node_id: str, kind: str, line: Line, x: float, y: float, r: float = R) -> str:
        self.fig.add(FNode(node_id, kind, [line], pos=(x, y), size=(2 * r, 2 * r), tooltip=line.text))
        return node_id

    def factor(self, node_id: str, x: float, y: float, *neighbours: str) -> str:
        self.fig.add(FNode(node_id, "factor", [Line("", "", "mark")], pos=(x, y),
                           size=(FACTOR, FACTOR), tooltip="factor"))
        for n in neighbours:
            self.fig.link(n, node_id, "link")
        return node_id

    def text(self, node_id: str, line: Line, x: float, y: float, w: float = 14, h: float = 14) -> str:
        self.fig.add(FNode(node_id, "text", [line], pos=(x, y), size=(w, h)))
        return node_id

    # -- structures -----------------------------------------------------------------
    def chain(self, prefix: str, var: str, kind: str, y: float) -> list[str]:
        """y₁ ■ y₂ ■ y₃ ■ … ■ y_T: variables with pairwise factors between neighbours."""
        ids = []
        for i, index in enumerate(CHAIN):
            x = i * DX
            if index == "\u2026":
                ids.append(self.text(f"{prefix}{var}.dots", Line("\u2026", "$\\cdots$", "var"), x, y))
            else:
                ids.append(self.var(f"{prefix}{var}.{index}", kind, var_line(var, index), x, y))
        for i in range(len(ids) - 1):
            self.factor(f"{prefix}{var}.pair.{i}", (i + 0.5) * DX, y, ids[i], ids[i + 1])
        return ids

    def network(self, prefix: str, x: float, y: float, targets: list[str]) -> None:
        """x (observed) -> f_θ (deterministic) -> each target (a unary factor or a potential)."""
        xid = self.var(f"{prefix}x", "observed", var_line("x"), x, y - 42)
        theta = "\u03b8"
        fid = self.var(f"{prefix}f", "network", Line("f" + theta, "$f_\\theta$", "var", "<I>f</I>" + _sub(theta)),
                       x, y, r=13)
        self.fig.link(xid, fid, "arrow")
        for t in targets:               # many potentials: lighter arrows, the structure reads first
            self.fig.link(fid, t, "arrow" if len(targets) <= 5 or t.endswith("unary") else "feed")

    def unaries(self, prefix: str, variables: list[str], dy: float = -32) -> list[str]:
        out = []
        for v in variables:
            node = self.fig.nodes.get(v)
            if node is None or node.kind == "text":
                continue
            x, y = node.pos
            out.append(self.factor(f"{v}.unary", x, y + dy, v))
        return out

    def attach_potential(self, v: str, dx: float, dy: float) -> None:
        """v ■ φ_v: a unary factor to a deterministic potential computed by the network."""
        x, y = self.fig.nodes[v].pos
        phi = self.var(f"{v}.phi", "deterministic", var_line("phi"), x + 2 * dx, y + 2 * dy, r=PHI)
        self.factor(f"{v}.unary", x + dx, y + dy, v, phi)

    # -- one field node ----------------------------------------------------------------
    def field(self, node: Node, prefix: str) -> None:
        kind = drawing(node)
        if kind == "grid":
            self.grid(prefix)
        elif kind == "tree":
            self.tree(node, prefix)
        elif kind == "clique":
            self.clique(prefix)
        elif kind == "segments":
            self.segments(prefix)
        elif kind == "arcs":
            self.arcs(node, prefix)
        elif kind == "spans":
            self.spans(prefix)
        else:                       # a chain; an undeclared drawing is drawn as latent-dynamic
            self.sequence(node, prefix)

    def sequence(self, node: Node, prefix: str) -> None:
        centre = 2 * DX
        kind = drawing(node)
        if kind == "chain":
            labels = self.chain(prefix, "y", "label", 0)
            self.network(prefix, centre, -70, self.unaries(prefix, labels))
            return
        hidden = self.chain(prefix, "h", "hidden", 0)
        self.network(prefix, centre, -70, self.unaries(prefix, hidden))
        if kind == "hidden":                 # one label per sequence, in every transition factor
            y = self.var(f"{prefix}y", "label", var_line("y"), centre, 64)
            for i in range(len(CHAIN) - 1):
                self.fig.link(y, f"{prefix}h.pair.{i}", "link")
        else:                                # latent-dynamic: y_t owns a disjoint set of h_t
            for i, index in enumerate(CHAIN):
                if index == "\u2026":
                    self.text(f"{prefix}y.dots", Line("\u2026", "$\\cdots$", "var"), i * DX, 64)
                    continue
                y = self.var(f"{prefix}y.{index}", "label", var_line("y", index), i * DX, 64)
                self.factor(f"{prefix}y.{index}.member", i * DX, 32, y, f"{prefix}h.{index}")

    def grid(self, prefix: str) -> None:
        step = 64.0
        ids = {}
        for i in range(3):
            for j in range(3):
                ids[i, j] = self.var(f"{prefix}y.{i + 1}{j + 1}", "label", var_line("y", f"{i + 1},{j + 1}"),
                                     j * step, -i * step)
        for (i, j), v in sorted(ids.items()):
            if j < 2:
                self.factor(f"{v}.right", (j + 0.5) * step, -i * step, v, ids[i, j + 1])
            if i < 2:
                self.factor(f"{v}.down", j * step, -(i + 0.5) * step, v, ids[i + 1, j])
        for v in ids.values():
            self.attach_potential(v, 16, -16)
        self.inset(prefix, -70, -step)

    def tree(self, node: Node, prefix: str) -> None:
        """The spec's own tree (``parents``) when it is small, else a binary tree of 7."""
        parents = list(node.args.get("parents") or [])
        if not parents or len(parents) > MAX_TREE:
            parents = [-1, 0, 0, 1, 1, 2, 2]
        children: dict[int, list[int]] = {}
        for k, p in enumerate(parents):
            children.setdefault(p, []).append(k)
        leaf, level = 64.0, 70.0
        xs: dict[int, float] = {}
        next_leaf = [0.0]

        def place(k: int, depth: int) -> None:          # tidy: leaves in order, parents centred
            for c in children.get(k, []):
                place(c, depth + 1)
            kids = children.get(k, [])
            xs[k] = (xs[kids[0]] + xs[kids[-1]]) / 2 if kids else next_leaf[0]
            if not kids:
                next_leaf[0] += leaf
            ids[k] = self.var(f"{prefix}y.{k + 1}", "label", var_line("y", str(k + 1)), xs[k], -depth * level)

        ids: dict[int, str] = {}
        for root in children.get(-1, []):
            place(root, 0)
        for k, p in enumerate(parents):
            if p >= 0:
                (x0, y0), (x1, y1) = self.fig.nodes[ids[p]].pos, self.fig.nodes[ids[k]].pos
                self.factor(f"{ids[k]}.parent", (x0 + x1) / 2, (y0 + y1) / 2, ids[p], ids[k])
        for k in range(len(parents)):
            self.attach_potential(ids[k], 17, 0)
        self.inset(prefix, -70, -level)

    def clique(self, prefix: str) -> None:
        radius, n = 62.0, 5
        ids = []
        for k in range(n):
            a = math.pi / 2 + 2 * math.pi * k / n
            ids.append(self.var(f"{prefix}y.{k + 1}", "label", var_line("y", str(k + 1)),
                                radius * math.cos(a), radius * math.sin(a)))
        for a in range(n):
            for b in range(a + 1, n):
                (x0, y0), (x1, y1) = self.fig.nodes[ids[a]].pos, self.fig.nodes[ids[b]].pos
                self.factor(f"{prefix}pair.{a + 1}{b + 1}", (x0 + x1) / 2, (y0 + y1) / 2, ids[a], ids[b])
        for k, v in enumerate(ids):
            a = math.pi / 2 + 2 * math.pi * k / n
            self.attach_potential(v, 17 * math.cos(a), 17 * math.sin(a))
        self.inset(prefix, -radius - 88, 0)

    def segments(self, prefix: str) -> None:
        """Semi-Markov: segment labels y₁ ■ y₂ ■ … ■ y_J in a chain; under each, one factor that
        scores the label with the segment's length d_j (hidden: summed out) and the frame
        potentials φ_t of its run, drawn as a bracket over those frames; f_θ gives the φ_t."""
        runs = [("1", "2", "3"), ("4", "5"), None, ("T",)]      # a run per segment (None: more)
        indices = ("1", "2", "\u2026", "J")
        step, top, mid, low = 58.0, 0.0, -32.0, -64.0
        ys: list[str] = []
        for k, (run, index) in enumerate(zip(runs, indices)):
            x = k * step
            if run is None:
                ys.append(self.text(f"{prefix}y.dots", Line("\u2026", "$\\cdots$", "var"), x, top))
                self.text(f"{prefix}seg.dots", Line("\u2026", "$\\cdots$", "var"), x, low)
                continue
            y = self.var(f"{prefix}y.{index}", "label", var_line("y", index), x, top)
            ys.append(y)
            d = self.var(f"{prefix}d.{index}", "hidden", var_line("d", index), x + 22, mid)
            text = " ".join("\u03c6" + t for t in run)
            tex = "$" + "\\,".join(f"\\phi_{{{t}}}" for t in run) + "$"
            html = "&#160;".join("<I>\u03c6</I>" + _sub(t) for t in run)
            width = 6 + 12.5 * len(run)
            box = f"{prefix}seg.{index}"
            self.fig.add(FNode(box, "segment", [Line(text, tex, "var", html)], pos=(x, low),
                               size=(width, 18), tooltip=f"segment {index}: frames " + ", ".join(run)))
            self.factor(f"{prefix}seg.{index}.factor", x, mid, y, d, box)
        for i in range(len(ys) - 1):
            self.factor(f"{prefix}y.pair.{i}", (i + 0.5) * step, top, ys[i], ys[i + 1])
        boxes = [n for n in self.fig.nodes if n.startswith(f"{prefix}seg.") and self.fig.nodes[n].kind == "segment"]
        self.network(prefix, 1.5 * step, low - 48, boxes)

    # an example tree over five words (heads; 0 is ROOT): projective, and one with a crossing arc
    PROJECTIVE = (2, 0, 4, 2, 4)
    CROSSING = (2, 0, 4, 2, 3)

    def arcs(self, node: Node, prefix: str) -> None:
        """Dependency CRF: the words in a row after ROOT, an example tree's arcs drawn above them
        from head to dependent, one factor (the arc's score, from f_θ) on each arc's apex."""
        heads = self.PROJECTIVE if node.args.get("projective", True) else self.CROSSING
        step, rise = 34.0, 13.0
        root = self.text(f"{prefix}root", Line("ROOT", "\\textsc{root}", "op"), 0, 0,
                         w=self.measure_title("ROOT") + 6, h=14)
        words = [root]
        for m in range(1, len(heads) + 1):
            words.append(self.var(f"{prefix}w.{m}", "observed", var_line("w", str(m)), m * step, 0))
        factors = []
        for m, h in enumerate(heads, start=1):
            (xh, y0), (xm, _) = self.fig.nodes[words[h]].pos, self.fig.nodes[words[m]].pos
            side = 1 if xm > xh else -1
            start = (xh + side * 3, y0 + R - 1) if h else (xh, y0 + 7)
            end = (xm - side * 3, y0 + R - 1)
            first, second = arc_curve(start, end, 6 + rise * abs(m - h))
            f = f"{prefix}arc.{h}.{m}"
            self.fig.add(FNode(f, "factor", [Line("", "", "mark")], pos=second[0], size=(FACTOR, FACTOR),
                               tooltip=f"arc {h} \u2192 {m}"))
            self.fig.link(words[h], f, "link", first)
            self.fig.link(f, words[m], "arrow", second)
            factors.append(f)
        x0 = (len(heads) + 1) * step / 2
        top = max(self.fig.nodes[f].pos[1] for f in factors)
        fid = self.var(f"{prefix}f", "network", Line("f\u03b8", "$f_\\theta$", "var", "<I>f</I>" + _sub("\u03b8")),
                       x0, top + 36, r=13)
        xid = self.var(f"{prefix}x", "observed", var_line("x"), x0 - 44, top + 36)
        self.fig.link(xid, fid, "arrow")
        for f in factors:
            self.fig.link(fid, f, "feed")

    def spans(self, prefix: str) -> None:
        """CKY CRF: a binary bracketing of four words, a variable y_{i,j} (the span's label) per
        span, each with its factor (the span's score, from f_θ); the words observed below."""
        tree = {(1, 4): ((1, 2), (3, 4)), (1, 2): ((1, 1), (2, 2)), (3, 4): ((3, 3), (4, 4))}
        step, level = 50.0, 46.0
        ids = {}
        for (i, j) in [(1, 4), (1, 2), (3, 4), (1, 1), (2, 2), (3, 3), (4, 4)]:
            x = (i + j) / 2 * step
            ids[i, j] = self.var(f"{prefix}y.{i}{j}", "label", var_line("y", f"{i},{j}"), x, (j - i + 1) * level)
        for parent, kids in tree.items():
            for k in kids:
                self.fig.link(ids[parent], ids[k], "link")
        for i in range(1, 5):
            w = self.var(f"{prefix}w.{i}", "observed", var_line("w", str(i)), i * step, 0)
            self.fig.link(ids[i, i], w, "link")
        factors = []
        for (i, j), v in ids.items():
            x, y = self.fig.nodes[v].pos
            factors.append(self.factor(f"{v}.span", x + 17, y, v))
        self.network(prefix, -6, 3 * level, factors)

    def measure_title(self, text: str) -> float:
        return text_width(text, self.font, 9) * self.text_scale

    def inset(self, prefix: str, x: float, y: float) -> None:
        """Where the potentials come from: x -> f_θ -> every φ of the structure beside it."""
        phis = [n for n in self.fig.nodes if n.startswith(prefix) and n.endswith(".phi")]
        self.network(prefix, x, y, phis)

    # -- the figure ------------------------------------------------------------------------
    def build(self, fields: list[Node]) -> Figure:
        self.sequences = all(drawing(n) in SEQUENCES or drawing(n) not in PLANAR for n in fields)
        offset = 0.0
        for k, node in enumerate(fields):
            prefix = f"{node.name}:" if len(fields) > 1 else ""
            before = set(self.fig.nodes)
            self.field(node, prefix)
            new = [n for n in self.fig.nodes if n not in before]
            if offset:
                for n in new:
                    x, y = self.fig.nodes[n].pos
                    self.fig.nodes[n].pos = (x + offset, y)
                for e in self.fig.edges:
                    if e.points and e.tail in new:
                        e.points = tuple((x + offset, y) for x, y in e.points)
            xs = [self.fig.nodes[n].pos[0] for n in new]
            offset = max(xs) + 90
        self.narrow()
        self.caption(fields)
        legend_rows = self.legend_rows()
        cap_lines = self.caption_lines()
        below = 6 + 10 * len(cap_lines) + 16 * len(legend_rows) + 24
        self.normalise(below)
        self.plate()
        self.place_legend(legend_rows, 6 + 10 * len(cap_lines) + 4)
        self.place_caption(cap_lines)
        return self.fig

    def room(self) -> float:
        """Points across the drawing may use inside the plate (the plate and margins take 34)."""
        return (self.max_width or 1e9) - 34

    def narrow(self) -> None:
        """Too wide for the figure's width: bring the columns closer (never the sizes), down to
        two thirds of the drawn spacing, where circles and factors still stand apart."""
        x0, _, x1, _ = self.bounds()
        if x1 - x0 <= self.room() or not self.sequences:
            return                      # a 2-d structure keeps its spacing (its φ sit diagonally)
        left, span = x0, x1 - x0
        scale = max(0.64, (self.room() - 22) / (span - 22))
        for n in self.fig.nodes.values():
            n.pos = (left + (n.pos[0] - left) * scale, n.pos[1])

    def measure(self, text: str) -> float:
        # in LaTeX (text_scale > 1) captions carry math (H×W, f_θ), wider still
        return text_width(text, self.font, self.size) * self.text_scale * (1.08 if self.text_scale > 1 else 1)

    def bounds(self, kinds_out=("text-legend",)) -> tuple[float, float, float, float]:
        xs0, ys0, xs1, ys1 = [], [], [], []
        for n in self.fig.nodes.values():
            w, h = n.size
            xs0.append(n.pos[0] - w / 2)
            xs1.append(n.pos[0] + w / 2)
            ys0.append(n.pos[1] - h / 2)
            ys1.append(n.pos[1] + h / 2)
        return min(xs0), min(ys0), max(xs1), max(ys1)

    def normalise(self, below: float = 50) -> None:
        """Move everything to positive coordinates with room for the plate, legend and caption."""
        x0, y0, _, _ = self.bounds()
        for n in self.fig.nodes.values():
            n.pos = (round(n.pos[0] - x0 + 14, 2), round(n.pos[1] - y0 + below, 2))
        for e in self.fig.edges:
            if e.points:
                e.points = tuple((round(x - x0 + 14, 2), round(y - y0 + below, 2)) for x, y in e.points)

    def plate(self) -> None:
        x0, y0, x1, y1 = self.bounds()
        w, h = x1 - x0 + 20, y1 - y0 + 24
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 2
        plate = FNode("plate", "plate", [Line("", "", "mark")], pos=(cx, cy), size=(w, h),
                      tooltip="plate over the N examples")
        self.fig.nodes = {"plate": plate, **self.fig.nodes}     # drawn first, behind the rest
        self.text("plate.N", Line("N", "$N$", "var", "<I>N</I>"), cx + w / 2 - 10, cy - h / 2 + 9)

    def caption(self, fields: list[Node]) -> None:
        parts = []
        for node in fields:
            pot = self.ir.node(node.inputs[0]) if node.inputs else None
            what, kind = op_title(node.op, node.args), drawing(node)
            shape = pot.shape if pot is not None and pot.shape else ()
            sizes = [nominal_dim(d)[0] for d in shape]
            count = "hidden states" if kind in HIDDEN else "labels"
            if kind == "segments" and len(sizes) in (2, 3):
                length = sizes[0] if sizes[0] == "T" else f"T = {sizes[0]}"
                longest = node.args.get("max_len")
                what += f" over {length} frames, {sizes[-1]} labels, segments of up to {longest} frames"
            elif kind == "arcs" and len(sizes) in (2, 3):
                what += (f" over {sizes[0]} words" + (f", {sizes[2]} relations" if len(sizes) == 3 else "")
                         + (", projective (Eisner)" if node.args.get("projective", True)
                            else ", non-projective (matrix-tree)"))
            elif kind == "spans" and len(sizes) == 3:
                what += f" over {sizes[0]} words, {sizes[2]} span labels, binary trees"
            elif kind in SEQUENCES and len(sizes) == 2:
                length = sizes[0] if sizes[0] == "T" else f"T = {sizes[0]}"
                what += f" over {length} positions, {sizes[1]} {count}"
            elif kind == "tree" and len(sizes) == 2:
                what += f" over {sizes[0]} nodes, {sizes[1]} labels"
            elif len(sizes) == 3:
                what += f" over {sizes[1]}\u00d7{sizes[2]} pixels, {sizes[0]} labels"
            parts.append(what)
        net = [n for n in self.ir.order() if n.op != "input" and not is_field(n)]
        params = 0
        for n in net:
            params += ops.count_params(self.ir, n)
        layers = f"{len(net)} layer" + ("s" if len(net) != 1 else "")
        text = "; ".join(parts) + f"; f\u03b8: {layers}, {params_text(params)} params"
        tex = tex_escape("; ".join(parts)) + f"; $f_\\theta$: {layers}, {params_text(params)} params"
        self.fig.caption = Line(text, tex, "detail")

    LEGEND = (("observed", "observed"), ("label", "label"), ("hidden", "hidden state"),
              ("deterministic", "deterministic"), ("network", "network"), ("factor", "factor"),
              ("segment", "segment"))

    def legend_rows(self) -> list[list[tuple[str, str, float]]]:
        """The legend's entries (kind, words, text width) in rows no wider than the figure."""
        kinds = {n.kind for n in self.fig.nodes.values()}
        rows: list[list] = [[]]
        x = 0.0
        for kind, words in self.LEGEND:
            if kind not in kinds:
                continue
            width = self.measure(words) + 4
            if rows[-1] and x + 26 + width > self.room() + 20:
                rows.append([])
                x = 0.0
            rows[-1].append((kind, words, width))
            x += 26 + width
        return [r for r in rows if r]

    def place_legend(self, rows: list, y_bottom: float) -> None:
        """A sample of each mark with its words, under the plate, row by row."""
        for r, row in enumerate(rows):
            x, y = 14.0, y_bottom + 16 * (len(rows) - 1 - r) + 6
            for kind, words, width in row:
                size = FACTOR if kind == "factor" else 15.0 if kind == "deterministic" else 12.0
                self.fig.add(FNode(f"legend.{kind}", kind, [Line("", "", "mark")], pos=(x + 6, y),
                                   size=(size, size)))
                self.fig.add(FNode(f"legend.{kind}.text", "legend-text",
                                   [Line(words, tex_escape(words), "detail")],
                                   pos=(x + 16 + width / 2, y), size=(width, 10)))
                x += 26 + width

    def caption_lines(self) -> list[Line]:
        """The caption broken at its clauses (then words) into lines that fit the figure."""
        cap = self.fig.caption
        if cap is None:
            return []
        room = self.room() + 20
        pieces = list(zip(cap.text.split("; "), cap.tex.split("; ")))
        lines: list[tuple[str, str]] = []
        for text, tex in pieces:
            if lines and self.measure(lines[-1][0] + "; " + text) <= room:
                lines[-1] = (lines[-1][0] + "; " + text, lines[-1][1] + "; " + tex)
            elif self.measure(text) <= room or " " not in text:
                lines.append((text, tex))
            else:                                   # one clause too long: break it at words
                words, twords = text.split(" "), tex.split(" ")
                if len(words) != len(twords):
                    words, twords = [text], [tex]
                line, tline = words[0], twords[0]
                for w, tw in zip(words[1:], twords[1:]):
                    if self.measure(line + " " + w) <= room:
                        line, tline = line + " " + w, tline + " " + tw
                    else:
                        lines.append((line, tline))
                        line, tline = w, tw
                lines.append((line, tline))
        return [Line(text, tex, "detail") for text, tex in lines]

    def place_caption(self, lines: list[Line]) -> None:
        for k, line in enumerate(lines):
            width = self.measure(line.text) + 6
            node_id = "caption" if k == 0 else f"caption.{k}"
            self.fig.add(FNode(node_id, "legend-text", [line],
                               pos=(14 + width / 2, 6 + 10 * (len(lines) - 1 - k)), size=(width, 10)))


def model_figure(ir: IR, font: str = "Times-Roman", detail_size: float = 7.5,
                 max_width: float | None = None, text_scale: float = 1.0) -> Figure:
    """The graphical-model view; ``max_width`` (points) narrows the drawing and breaks the
    legend and caption to fit; ``text_scale`` measures text wider (LaTeX's fonts, .tex)."""
    fields = [n for n in ir.order() if is_field(n)]
    if not fields:
        from dagnet.render.layout import RenderError
        raise RenderError(f"{ir.name} has no stochastic node (CRF) to draw as a graphical model; "
                          "use --view arch")
    builder = ModelBuilder(ir, font, detail_size)
    builder.max_width, builder.text_scale = max_width, text_scale
    return builder.build(fields)
