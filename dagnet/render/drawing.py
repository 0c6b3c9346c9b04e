"""The figure: what is drawn, before any layout. Both views build one; dot.py writes it.

A figure is a small graph of its own: nodes (a layer, a collapsed block, a merge
mark, a random variable, a factor), edges, clusters (an expanded block, a
plate) and a legend. Node ids are spec paths (``layer3.1.body.0``), so the same
spec always gives the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagnet.render.labels import Line


@dataclass
class FNode:
    id: str
    kind: str                   # a style key: a family, "input", "block", or a model-view kind
    lines: list[Line]
    params: int = 0
    members: tuple = ()         # IR node names drawn by this node
    output: bool = False        # produces one of the model's outputs (drawn with a double border)
    pos: tuple | None = None    # pinned position in points (the graphical-model view)
    size: tuple | None = None   # fixed (width, height) in points, for marks and variables
    tooltip: str = ""


@dataclass
class FEdge:
    tail: str
    head: str
    kind: str = "data"          # data | skip (residual/dense) | link (undirected, model view)
    points: tuple | None = None  # a pinned Bézier (the model view's curved arcs): control points in
                                 # points, 3k+1 of them, tail to head


@dataclass
class FCluster:
    id: str
    label: Line
    nodes: list[str] = field(default_factory=list)
    clusters: list["FCluster"] = field(default_factory=list)
    kind: str = "group"         # group (an expanded block) | plate


@dataclass
class Figure:
    name: str
    view: str                   # arch | model
    nodes: dict[str, FNode] = field(default_factory=dict)
    edges: list[FEdge] = field(default_factory=list)
    clusters: list[FCluster] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)   # (style key, words)
    pinned: bool = False        # positions are given: lay out with neato -n2
    caption: Line | None = None

    def add(self, node: FNode) -> FNode:
        self.nodes[node.id] = node
        return node

    def link(self, tail: str, head: str, kind: str = "data", points: tuple | None = None) -> None:
        self.edges.append(FEdge(tail, head, kind, points))
