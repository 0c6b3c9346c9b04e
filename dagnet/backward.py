"""An explicit backward engine: backpropagation as message passing on the DAG.

The forward pass sends messages M_c = f_c(M_p : p parent of c) in the forward
schedule. The backward pass sends V_p = sum over children c of J_cp^T V_c in
the reverse schedule, where J_cp = dM_c/dM_p, and a node's parameter gradient
is J_cw^T V_c. The forward pass is ``torch.fx.Interpreter`` run node by node,
each node on fresh leaves of its parents' messages, so every node keeps its own
small autograd graph; the vector-Jacobian product J^T V of a node is then one
local ``torch.autograd.grad`` call, and the engine itself decides the order and
accumulates the V messages. Each node's state is freed when autograd releases
the graph.

It is a reference and a teaching tool: gradients equal autograd's (to 1e-6 in
float64, tested), and ``bench/bench_backward.py`` measures its cost.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.fx as fx
from torch import nn


class _Step(NamedTuple):
    """One node's forward state: (fx parent, local leaf) pairs, its output, its parameters."""

    node: fx.Node
    parents: list[tuple[fx.Node, torch.Tensor]]
    output: object
    params: list[nn.Parameter]


class _Recorder(fx.Interpreter):
    """Runs a GraphModule node by node and records each computing node as a ``_Step``."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.steps: list[_Step] = []

    def run_node(self, node: fx.Node):
        if node.op not in ("call_module", "call_method", "call_function"):
            return super().run_node(node)       # placeholder, get_attr (a CRF or checkpointed part), output
        parents = []

        def leaf(parent: fx.Node):
            """The parent's message as a fresh leaf: where this node's local graph starts."""
            value = self.env[parent]
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.detach().requires_grad_(True)
                parents.append((parent, value))
            return value

        args = fx.node.map_arg(node.args, leaf)     # torch.cat([...]): each listed parent too
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        output = getattr(self, node.op)(node.target, args, kwargs)
        self.steps.append(_Step(node, parents, output, self._parameters(node, args)))
        return output

    def call_module(self, target: str, args, kwargs):
        """The submodule by a dict lookup (the base class walks the dotted path each time)."""
        return self.submodules[target](*args, **kwargs)

    def _parameters(self, node: fx.Node, args) -> list[nn.Parameter]:
        """The trainable parameters a node's call uses: its module's, or a module argument's."""
        modules = [self.submodules[node.target]] if node.op == "call_module" else \
            [a for a in args if isinstance(a, nn.Module)]   # self.crf.marginals(...), checkpointed(part, ...)
        return [p for m in modules for p in m.parameters() if p.requires_grad]


class _MessagePassing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, n_inputs, *tensors):
        recorder = _Recorder(module)
        with torch.enable_grad():
            output = recorder.run(*tensors[:n_inputs])
        ctx.module, ctx.steps = module, recorder.steps
        out_nodes = next(n for n in reversed(module.graph.nodes) if n.op == "output").args[0]
        ctx.out_nodes = list(out_nodes.values()) if isinstance(out_nodes, dict) else [out_nodes]
        outputs = output.values() if isinstance(output, dict) else [output]
        return tuple(o.detach() for o in outputs)

    @staticmethod
    def backward(ctx, *grads):
        messages: dict[fx.Node, torch.Tensor] = {}       # V_c, accumulated over children
        for node, grad in zip(ctx.out_nodes, grads):
            _accumulate(messages, node, grad)
        param_grads: dict[nn.Parameter, torch.Tensor] = {}
        for step in reversed(ctx.steps):                  # the reverse schedule
            v = messages.pop(step.node, None)
            if v is None:
                continue
            targets = [leaf for _, leaf in step.parents] + step.params
            # retain: gradcheck and retain_graph=True callers run the backward pass again;
            # the local graphs go when autograd releases this Function's context
            grads_in = torch.autograd.grad(step.output, targets, v, allow_unused=True, retain_graph=True)
            for (parent, _), g in zip(step.parents, grads_in):
                _accumulate(messages, parent, g)                # V_p += J_cp^T V_c
            for p, g in zip(step.params, grads_in[len(step.parents):]):
                _accumulate(param_grads, p, g)                  # dL/dw += J_cw^T V_c
        placeholders = [n for n in ctx.module.graph.nodes if n.op == "placeholder"]
        return (None, None, *[messages.get(n) for n in placeholders],
                *[param_grads.get(p) for p in _trainable(ctx.module)])


def _accumulate(messages: dict, key, grad) -> None:
    if grad is not None:
        messages[key] = messages[key] + grad if key in messages else grad


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def use_message_passing(module: fx.GraphModule) -> fx.GraphModule:
    """Make ``module``'s backward pass the explicit engine; returns the same module.

    The module keeps its state_dict, parameters and forward results; only how
    gradients are computed changes.
    """
    names = [n.target for n in module.graph.nodes if n.op == "placeholder"]
    output = next(n for n in module.graph.nodes if n.op == "output").args[0]

    def forward(**inputs):
        # the parameters go in as arguments so that autograd asks this Function for their gradients
        outs = _MessagePassing.apply(module, len(names), *[inputs[n] for n in names], *_trainable(module))
        return dict(zip(output, outs)) if isinstance(output, dict) else outs[0]

    module.forward = forward            # an instance attribute: nn.Module.__call__ finds it first
    module.dagnet_backward = "messages"
    return module
