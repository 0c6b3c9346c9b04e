"""Message schedules, memory estimates and activation checkpointing."""

import pytest
import torch

import dagnet
from dagnet.emit import emit, var_name
from dagnet.schedule import forward_schedule, peak_memory
from tests.conftest import SPECS


def saved_activation_bytes(model, **inputs) -> int:
    """Bytes of the tensors autograd keeps for backward, not counting parameters."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**inputs)
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    out.sum().backward()
    return sum(v for k, v in storages.items() if k not in weights)


def test_schedule_lifetimes():
    ir = dagnet.load(SPECS / "lenet.yaml")
    messages = forward_schedule(ir, batch=2)
    by_name = {m.node: m for m in messages}
    assert [m.node for m in messages][:3] == ["image", "c1", "s2.0"]
    assert by_name["c1"].last_use == by_name["s2.0"].step       # freed after its only consumer
    assert by_name["logits"].last_use == len(messages)          # outputs live to the end
    assert by_name["c1"].bytes == 2 * 6 * 28 * 28 * 4
    assert by_name["s4.2"].storage == "s4.1"                    # flatten is a view


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_training_memory_estimate_is_close_to_what_autograd_saves(name):
    ir = dagnet.load(SPECS / f"{name}.yaml")
    measured = saved_activation_bytes(dagnet.compile(ir), image=torch.randn(2, 3, 32, 32))
    estimate = peak_memory(forward_schedule(ir, 2, {"H": 32, "W": 32}), training=True)
    assert 0.8 < estimate / measured < 1.1


def test_checkpointing_blocks_keeps_gradients_and_cuts_saved_memory():
    ir = dagnet.load(SPECS / "resnet18.yaml", {"classes": 10})
    torch.manual_seed(0)
    plain, ckpt = emit(ir), emit(ir, checkpoint="blocks")
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 48, 48)
    before, after = saved_activation_bytes(plain, image=x), saved_activation_bytes(ckpt, image=x)
    assert after < 0.6 * before
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_checkpointing_leaves_batch_norm_statistics_as_a_plain_model_does():
    """The backward pass recomputes each part; its batch norms must not count the batch twice."""
    ir = dagnet.load(SPECS / "resnet18.yaml", {"classes": 10})
    torch.manual_seed(0)
    plain, ckpt = emit(ir), emit(ir, checkpoint="blocks")
    ckpt.load_state_dict(plain.state_dict())
    for step in range(2):
        x = torch.randn(2, 3, 32, 32)
        for model in (plain, ckpt):
            model(image=x).sum().backward()
    buffers = dict(ckpt.named_buffers())
    for name, value in plain.named_buffers():
        torch.testing.assert_close(buffers[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert int(buffers["stem.1.num_batches_tracked"]) == 2


def test_checkpoint_key_in_spec():
    text = ("dagnet: 1\ninputs:\n  x: {shape: [4, 8]}\nnodes:\n  body:\n    in: x\n"
            "    seq: conv1d(4, 3, padding=1) -> relu -> conv1d(4, 3, padding=1)\n    checkpoint: true\n"
            "  out: {op: add, in: [body, x]}\noutputs: [out]\n")
    model = dagnet.compile(text)
    assert "dagnet_emit_checkpointed(body_part, x" in model.code
    x = torch.randn(3, 4, 8, requires_grad=True)
    model(x=x).sum().backward()
    assert x.grad is not None and "body.0.weight" in model.state_dict()


def test_cli_schedule(capsys):
    from dagnet.cli import main
    assert main(["compile", str(SPECS / "resnet18.yaml"), "--schedule", "--batch", "16",
                 "--dim", "H=224", "--dim", "W=224"]) == 0
    out = capsys.readouterr().out
    assert "freed after step" in out and "V[fc] -> flat" in out and "peak activation memory" in out


@pytest.mark.parametrize("name", ["lenet", "densenet121", "unet"])
def test_the_schedule_is_the_order_and_lifetimes_of_the_emitted_code(name):
    """schedule.py analyses the emitted forward, it is not a plan emit reads: they must agree."""
    ir = dagnet.load(SPECS / f"{name}.yaml")
    graph = emit(ir).graph
    computed = [n for n in graph.nodes if n.op in ("placeholder", "call_module", "call_function", "call_method")]
    position = {n.name: i for i, n in enumerate(computed)}
    messages = [m for m in forward_schedule(ir) if var_name(m.node) in position]
    assert [var_name(m.node) for m in messages] == [n.name for n in computed]
    outputs = set(ir.outputs.values())
    for m, node in zip(messages, computed):         # freed after the same consumer torch.fx frees it after
        users = [position[u.name] for u in node.users if u.name in position]
        if m.node not in outputs and users:
            assert var_name(ir.order()[m.last_use].name) == computed[max(users)].name, m.node
