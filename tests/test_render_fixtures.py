"""Specs and hand-built IRs shared by the tests/test_render_*.py files (no tests here)."""

from __future__ import annotations

import networkx as nx

from dagnet.errors import Loc
from dagnet.ir import IR, Node

# Blocks, a repeat whose first repetition differs (projection), identical repeats
# that fold, a residual add inside the block, and a `connect: dense` stack.
TINY = """\
dagnet: 1
name: tiny
params: {classes: 10}
blocks:
  basic:
    params: {channels: 8, stride: 1, project: false}
    nodes:
      body:
        in: x
        seq:
          - conv2d(channels, 3, stride=stride, padding=1, bias=false)
          - batch_norm
          - relu
          - conv2d(channels, 3, padding=1, bias=false)
          - batch_norm
      shortcut:
        in: x
        when: project
        seq: conv2d(channels, 1, stride=stride, bias=false) -> batch_norm
      sum: {op: add, in: [body, shortcut]}
      out: {op: relu, in: sum}
    outputs: [out]
inputs:
  image: {shape: [3, H, W]}
nodes:
  stem:
    in: image
    seq: conv2d(8, 3, padding=1) -> relu
  stage:
    block: basic
    in: stem
    repeat: 3
    channels: 16
    stride: 2 if i == 0 else 1
    project: i == 0
  dense:
    in: stage
    seq: batch_norm -> relu -> conv2d(4, 3, padding=1)
    repeat: 3
    connect: dense
  pool: {op: adaptive_avg_pool2d, in: dense, output_size: 1}
  flat: {op: flatten, in: pool}
  fc: {op: linear, in: flat, out_features: classes}
outputs: [fc]
"""

FIELD_OPS = ("chain_crf", "hidden_crf", "latent_dynamic_crf", "grid_crf", "tree_crf", "dense_crf")


def field_ir(op: str, args: dict | None = None) -> IR:
    """x -> linear scores -> a CRF node, built by hand (no registry entry needed)."""
    import sympy

    from dagnet import ops
    opdef = ops.get(op)
    defaults = {a.name: a.default for a in opdef.args if not a.required} if opdef else {}
    if opdef and any(a.name == "num_labels" and a.required for a in opdef.args):
        defaults["num_labels"] = 5
    T = sympy.Symbol("T", integer=True, positive=True)
    H = sympy.Symbol("H", integer=True, positive=True)
    W = sympy.Symbol("W", integer=True, positive=True)
    image_like = op in ("grid_crf", "dense_crf")
    x_shape = (3, H, W) if image_like else (T, 8)
    s_shape = (5, H, W) if image_like else (T, 5)
    nodes = [
        Node("x", "input", [], {}, Loc("hand", 1, 1), shape=x_shape),
        Node("scores", "conv2d" if image_like else "linear", ["x"],
             {"out_channels": 5, "kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1,
              "groups": 1, "bias": True, "padding_mode": "zeros"} if image_like
             else {"out_features": 5, "bias": True}, Loc("hand", 2, 1), shape=s_shape),
        Node("crf", op, ["scores"], {**defaults, **(args or {})}, Loc("hand", 3, 1), shape=s_shape),
    ]
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name, node=n)
    g.add_edge("x", "scores")
    g.add_edge("scores", "crf")
    return IR(f"{op}-model", "hand", g, ["x"], {"crf": "crf"})
