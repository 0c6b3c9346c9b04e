"""An explicit backward engine: backpropagation as message passing on the DAG.

The forward pass sends messages M_c = f_c(M_p : p parent of c) in the forward
schedule. The backward pass sends V_p = sum over children c of J_cp^T V_c in
the reverse schedule, where J_cp = dM_c/dM_p, and a node's parameter gradient
is J_cw^T V_c. Here each node keeps its own small autograd graph from the
forward pass (its inputs as detached leaves), so the vector-Jacobian product
J^T V of a node is one local ``torch.autograd.grad`` call, and the engine
itself decides the order and accumulates the V messages; each node's
state is freed when autograd releases the graph.

It is a reference and a teaching tool: gradients equal autograd's (to 1e-6 in
float64, tested), and ``bench/bench_backward.py`` measures its cost.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn  # noqa: F401  (types in annotations)


class _Step:
    """One node's forward state: detached inputs, output, and its parameters."""

    __slots__ = ("node", "inputs", "output", "params")

    def __init__(self, node, inputs, output, params):
        self.node, self.inputs, self.output, self.params = node, inputs, output, params


def _leaf(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value


def _map(arg, env):
    return fx.node.map_arg(arg, lambda n: env[n])


class _MessagePassing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, engine, names, *tensors):
        inputs = dict(zip(names, tensors[:len(names)]))
        steps, env, output = [], {}, None
        with torch.enable_grad():
            for node in engine.graph.nodes:
                if node.op == "placeholder":
                    env[node] = _leaf(inputs[node.target])
                elif node.op == "output":
                    output = node.args[0]
                elif node.op == "get_attr":             # a CRF module whose method the next node calls
                    env[node] = engine.root.get_submodule(node.target)
                else:
                    args, kwargs = _map(node.args, env), _map(node.kwargs, env)
                    # every parent message enters as a fresh leaf: the node's local graph
                    leaves = [(_leaf(a) if isinstance(a, torch.Tensor) else a) for a in args]
                    if node.op == "call_module":
                        module = engine.root.get_submodule(node.target)
                        out = module(*leaves, **kwargs)
                        params = [p for p in module.parameters() if p.requires_grad]
                    elif node.op == "call_method":
                        module = leaves[0]
                        out = getattr(module, node.target)(*leaves[1:], **kwargs)
                        params = [p for p in module.parameters() if p.requires_grad]
                    else:
                        flat = [_leaf(t) if isinstance(t, torch.Tensor) else t for t in leaves[0]] \
                            if isinstance(leaves[0], (list, tuple)) else None
                        if flat is not None:            # torch.cat([...]): the list holds the parents
                            leaves = [flat, *leaves[1:]]
                        out = node.target(*leaves, **kwargs)
                        params = []
                    env[node] = out
                    steps.append(_Step(node, leaves, out, params))
        ctx.engine, ctx.steps, ctx.names = engine, steps, names
        outs = output if isinstance(output, dict) else {"": output}
        ctx.keys = list(outs)
        ctx.out_nodes = [outs[k] for k in ctx.keys]
        return tuple(env[n].detach() for n in ctx.out_nodes)

    @staticmethod
    def backward(ctx, *grads):
        engine = ctx.engine
        messages: dict[fx.Node, torch.Tensor] = {}       # V_c, accumulated over children
        for node, grad in zip(ctx.out_nodes, grads):
            _accumulate(messages, node, grad)
        param_grads: dict[nn.Parameter, torch.Tensor] = {}
        for step in reversed(ctx.steps):                  # the reverse schedule
            v = messages.pop(step.node, None)
            if v is None:
                continue
            parents = _parents(step)
            targets = [leaf for _, leaf in parents] + step.params
            # retain: gradcheck and retain_graph=True callers run the backward pass again;
            # the local graphs go when autograd releases this Function's context
            grads_in = torch.autograd.grad(step.output, targets, v, allow_unused=True, retain_graph=True)
            for (parent, _), g in zip(parents, grads_in):
                _accumulate(messages, parent, g)                # V_p += J_cp^T V_c
            for p, g in zip(step.params, grads_in[len(parents):]):
                if g is not None:
                    param_grads[p] = param_grads[p] + g if p in param_grads else g
        input_grads = []
        placeholders = {n.target: n for n in engine.graph.nodes if n.op == "placeholder"}
        for name in ctx.names:
            g = messages.get(placeholders[name])
            input_grads.append(g)
        params = engine.params
        return (None, None, *input_grads, *[param_grads.get(p) for p in params])


def _parents(step):
    """(fx parent node, local leaf tensor) pairs of a step, lists flattened."""
    pairs = []
    for arg, leaf in zip(step.node.args, step.inputs):
        if isinstance(arg, fx.Node) and isinstance(leaf, torch.Tensor) and leaf.requires_grad:
            pairs.append((arg, leaf))
        elif isinstance(arg, (list, tuple)):
            pairs += [(a, t) for a, t in zip(arg, leaf)
                      if isinstance(a, fx.Node) and isinstance(t, torch.Tensor) and t.requires_grad]
    return pairs


def _accumulate(messages, node, grad):
    if grad is None:
        return
    messages[node] = messages[node] + grad if node in messages else grad


class _Engine:
    """What the autograd Function needs to run a GraphModule's schedule."""

    def __init__(self, module: fx.GraphModule):
        self.root, self.graph = module, module.graph
        self.names = [n.target for n in self.graph.nodes if n.op == "placeholder"]
        self.output = next(n for n in self.graph.nodes if n.op == "output").args[0]

    @property
    def params(self):
        return [p for p in self.root.parameters() if p.requires_grad]


def use_message_passing(module: fx.GraphModule) -> fx.GraphModule:
    """Make ``module``'s backward pass the explicit engine; returns the same module.

    The module keeps its state_dict, parameters and forward results; only how
    gradients are computed changes.
    """
    engine = _Engine(module)

    def forward(**inputs):
        outs = _MessagePassing.apply(engine, engine.names, *[inputs[n] for n in engine.names],
                                     *engine.params)
        return dict(zip(engine.output, outs)) if isinstance(engine.output, dict) else outs[0]

    module.forward = forward            # an instance attribute: nn.Module.__call__ finds it first
    module.dagnet_backward = "messages"
    return module
