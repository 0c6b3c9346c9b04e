"""Compiled specs against the library modules they stand for (torchvision's ResNet-50
and ViT-B/16, transformers' BERT-base), forward + backward in training mode, eager
and under ``torch.compile``, on the device. The library model gets the spec's
weights (tests/references.copy_in_order, every shape checked) and both outputs
are compared before timing. On CUDA both run under bf16 autocast, as one trains
there; on the CPU in float32. Goal: time ratio dagnet / library <= 1.02.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

import dagnet

from .common import Context, compare, relative_error

ROOT = Path(__file__).resolve().parents[2]
GOAL = 1.02


def _references():
    sys.path.insert(0, str(ROOT / "tests"))
    from references import copy_in_order, torchvision
    return copy_in_order, torchvision


def resnet50(ctx: Context):
    copy_in_order, torchvision = _references()
    batch, size = ctx.pick((64, 224), (64, 224), (2, 32))
    depths = ctx.pick([3, 4, 6, 3], [3, 4, 6, 3], [1, 1, 1, 1])      # tiny: one bottleneck per stage
    models = torchvision().models
    reference = models.resnet.ResNet(models.resnet.Bottleneck, depths)
    ours = dagnet.compile(dagnet.load(ROOT / "specs" / "resnet50.yaml",
                                      {f"depth{i + 1}": d for i, d in enumerate(depths)}))
    copy_in_order(reference, ours)
    x = torch.randn(batch, 3, size, size, device=ctx.device)
    return ours, reference, (lambda m: m(x)), (lambda m: m(x)), f"batch {batch}, {size}x{size}"


def vit_b_16(ctx: Context):
    copy_in_order, torchvision = _references()
    torchvision()
    from torchvision.models.vision_transformer import VisionTransformer
    p = ctx.pick(*[{"image_size": 224, "patch": 16, "layers": 12, "heads": 12, "dim": 768, "mlp_dim": 3072}] * 2,
                 {"image_size": 32, "patch": 16, "layers": 1, "heads": 2, "dim": 32, "mlp_dim": 64})
    batch = ctx.pick(64, 64, 2)
    reference = VisionTransformer(image_size=p["image_size"], patch_size=p["patch"], num_layers=p["layers"],
                                  num_heads=p["heads"], hidden_dim=p["dim"], mlp_dim=p["mlp_dim"])
    ours = dagnet.compile(dagnet.load(ROOT / "specs" / "vit.yaml", p))
    copy_in_order(reference, ours)
    x = torch.randn(batch, 3, p["image_size"], p["image_size"], device=ctx.device)
    return ours, reference, (lambda m: m(x)), (lambda m: m(x)), f"batch {batch}, {p['image_size']}x{p['image_size']}"


def bert_base(ctx: Context):
    copy_in_order, torchvision = _references()
    torchvision()           # transformers imports torchvision, which needs the nms schemas first
    import transformers
    p = ctx.pick(*[{"vocab": 30522, "hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072,
                    "max_positions": 512}] * 2,
                 {"vocab": 100, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_positions": 40})
    batch, length = ctx.pick((32, 128), (32, 128), (2, 16))
    config = transformers.BertConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                                     num_attention_heads=p["heads"], intermediate_size=p["intermediate"],
                                     max_position_embeddings=p["max_positions"],
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = transformers.BertModel(config, add_pooling_layer=False)
    ours = dagnet.compile(dagnet.load(ROOT / "specs" / "bert.yaml", {**p, "dropout": 0.0, "attention_dropout": 0.0}))
    copy_in_order(reference, ours)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, p["vocab"], (batch, length), generator=g).to(ctx.device)
    types = torch.zeros_like(ids)
    mask = (torch.arange(length) < torch.randint(length // 2, length + 1, (batch, 1), generator=g)).to(ctx.device)
    return (ours, reference, lambda m: m(tokens=ids, token_types=types, mask=mask),
            lambda m: m(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state,
            f"batch {batch}, {length} tokens")


MODELS = {"resnet50": resnet50, "vit_b_16": vit_b_16, "bert_base": bert_base}


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _output(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def measure(ctx: Context, name: str, compiled: bool) -> None:
    ours, reference, call_ours, call_ref, setting = MODELS[name](ctx)
    models = {"dagnet": (ours.to(ctx.device).train(), call_ours),
              "library": (reference.to(ctx.device).train(), call_ref)}
    torch.manual_seed(0)
    with torch.no_grad(), autocast(ctx.device):
        error = relative_error(_output(call_ours(ours)).float(), _output(call_ref(reference)).float())
    if compiled:
        backend = "eager" if ctx.tiny else "inductor"     # the CPU path checks tracing, not codegen
        models = {k: (torch.compile(m, backend=backend), c) for k, (m, c) in models.items()}

    def step(model, call):
        def run():
            model.zero_grad(set_to_none=True)
            with autocast(ctx.device):
                out = _output(call(model))
            out.float().sum().backward()
        return run

    repeats, seconds = ctx.pick((11, 15.0), (5, 6.0), (3, 1.0))
    ms = compare({k: step(m, c) for k, (m, c) in models.items()}, ctx.device, repeats, seconds,
                 warmup=2 if compiled else 1)
    ratio = ms["dagnet"] / ms["library"]
    ctx.row(model=name, mode="torch.compile" if compiled else "eager", setting=setting,
            precision="bf16 autocast" if ctx.device.type == "cuda" else "fp32",
            **{"dagnet ms": ms["dagnet"], "library ms": ms["library"], "ratio": ratio,
               "goal": f"<= {GOAL}: {'met' if ratio <= GOAL else 'missed'}", "output rel err": error})


def bench_eager(ctx: Context) -> None:
    for name in MODELS:
        _guarded(ctx, name, False, needs=15)


def bench_compiled(ctx: Context) -> None:
    # tiny (the CPU check of the script): one small model, traced by dynamo without inductor's codegen
    for name in (["vit_b_16"] if ctx.tiny else MODELS):
        _guarded(ctx, name, True, needs=ctx.pick(80, 80, 5))


def _guarded(ctx: Context, name: str, compiled: bool, needs: float) -> None:
    """One model in its own try block: a failure is a note, the next model still runs."""
    if ctx.left() < needs:
        ctx.note(f"{name} ({'compiled' if compiled else 'eager'}) skipped: {ctx.left():.0f} s left")
        return
    try:
        measure(ctx, name, compiled)
    except Exception as error:       # noqa: BLE001 -- reported, and the others still run
        ctx.note(f"{name} ({'compiled' if compiled else 'eager'}) failed: {type(error).__name__}: "
                 f"{str(error).splitlines()[0][:200] if str(error) else ''}")
        import traceback
        traceback.print_exc()
    finally:
        torch._dynamo.reset()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
