"""BERT and GPT-2 written as specs compute what Hugging Face's `transformers` models built
from the same config compute (no download: the config is built here and weights are
random), and BERT-base has BertModel's parameter count."""

import pytest
import torch

import dagnet
from dagnet.summary import summarize
from references import copy_in_order, randomise, torchvision
from tests.conftest import SPECS


@pytest.fixture(scope="module")
def transformers():
    torchvision()          # transformers imports torchvision, whose CPU wheel needs the nms schemas first
    return pytest.importorskip("transformers")


def _batch(vocab, lengths, seed=1):
    """Token ids [B, T] and a bool mask [B, T], each sequence padded on the right to T."""
    generator = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=generator)
    mask = torch.arange(T) < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


BERT_SMALL = {"vocab": 100, "hidden": 32, "layers": 2, "heads": 4, "intermediate": 64, "max_positions": 40}


def _bert_config(transformers, p):
    return transformers.BertConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                                   num_attention_heads=p["heads"], intermediate_size=p["intermediate"],
                                   max_position_embeddings=p["max_positions"])


def test_bert_base_parameter_count_equals_transformers(transformers):
    with torch.device("meta"):
        reference = transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False)
    count = sum(p.numel() for p in reference.parameters())
    assert count == 108_891_648
    assert sum(r.params for r in summarize(dagnet.load(SPECS / "bert.yaml"))) == count


@pytest.mark.parametrize("params", [BERT_SMALL, {**BERT_SMALL, "hidden": 48, "heads": 3, "layers": 3}],
                         ids=["h32", "h48"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_small_bert_equals_transformers(transformers, params, grad):
    reference = randomise(transformers.BertModel(_bert_config(transformers, params), add_pooling_layer=False)).eval()
    model = dagnet.compile(dagnet.load(SPECS / "bert.yaml", params)).eval()
    copy_in_order(reference, model)
    ids, mask = _batch(params["vocab"], [10, 6, 3])
    types = torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(2))
    with torch.set_grad_enabled(grad):
        # both call F.scaled_dot_product_attention with a boolean mask: equal to the last bit
        expected = reference(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(model(tokens=ids, token_types=types, mask=mask), expected, rtol=0, atol=0)
        # without a mask or segment ids HF attends everywhere and uses segment 0
        expected = reference(input_ids=ids).last_hidden_state
        out = model(tokens=ids, token_types=torch.zeros_like(ids), mask=torch.ones_like(mask))
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_bert_dsl_is_short():
    assert len((SPECS / "bert.dag").read_text().splitlines()) <= 40


GPT2_SMALL = {"vocab": 100, "hidden": 32, "layers": 2, "heads": 4, "max_positions": 40}


def copy_conv1d_transposed(source, target):
    """copy_in_order for GPT-2: HF's Conv1D stores its weight as [in, out], the transpose
    of the spec's `linear` (nn.Linear, [out, in]); every other entry is copied as it is."""
    convs = {f"{name}.weight" for name, m in source.named_modules() if type(m).__name__ == "Conv1D"}
    theirs = {k: v.t() if k in convs else v for k, v in source.state_dict().items()}
    ours = target.state_dict()
    assert len(convs) > 0 and len(ours) == len(theirs), f"{len(theirs)} tensors to copy into {len(ours)}"
    for (their_key, value), (our_key, slot) in zip(theirs.items(), ours.items()):
        assert value.shape == slot.shape, f"{their_key} {tuple(value.shape)} vs {our_key} {tuple(slot.shape)}"
    target.load_state_dict(dict(zip(ours, theirs.values())))


def test_gpt2_parameter_count_equals_transformers(transformers):
    with torch.device("meta"):
        reference = transformers.GPT2Model(transformers.GPT2Config())
    count = sum(p.numel() for p in reference.parameters())
    assert count == 124_439_808
    assert sum(r.params for r in summarize(dagnet.load(SPECS / "gpt2.yaml"))) == count


@pytest.mark.parametrize("params", [GPT2_SMALL, {**GPT2_SMALL, "hidden": 48, "heads": 3, "layers": 3}],
                         ids=["h32", "h48"])
@pytest.mark.parametrize("activation", ["gelu_pytorch_tanh", "gelu_new"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_small_gpt2_equals_transformers(transformers, params, activation, grad):
    config = transformers.GPT2Config(vocab_size=params["vocab"], n_embd=params["hidden"], n_layer=params["layers"],
                                     n_head=params["heads"], n_positions=params["max_positions"],
                                     activation_function=activation, bos_token_id=0, eos_token_id=0)
    reference = randomise(transformers.GPT2Model(config)).eval()
    model = dagnet.compile(dagnet.load(SPECS / "gpt2.yaml", params)).eval()
    copy_conv1d_transposed(reference, model)
    # `gelu_pytorch_tanh` is the spec's F.gelu(approximate="tanh"); GPT-2's default `gelu_new`
    # writes the same formula in Python ops, which round differently (up to 4.8e-7 at |x| ~ 3)
    tolerance = {"rtol": 0, "atol": 0} if activation == "gelu_pytorch_tanh" else {"rtol": 1e-6, "atol": 1e-6}
    ids, mask = _batch(params["vocab"], [10, 6, 3])
    with torch.set_grad_enabled(grad):
        out = model(tokens=ids)
        torch.testing.assert_close(out, reference(input_ids=ids).last_hidden_state, **tolerance)
        # causal: padding on the right cannot reach the real tokens, so HF's padding mask changes nothing there
        expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(out[mask], expected[mask], **tolerance)


def test_bert_crf_tagger_takes_a_training_step():
    from dagnet.data import collate, load_dataset
    from dagnet.train.config import resolve_config
    from dagnet.train.evaluate import forward, model_inputs
    from dagnet.train.from_spec import build_model, check_data
    from dagnet.train.loop import seed_everything
    ir = dagnet.load(SPECS / "bert_crf_tagger.yaml")
    seed_everything(0)
    model, objective, losses = build_model(ir)
    config = resolve_config(ir.train, None, [])
    dataset = load_dataset(**(dict(config.data) | {"num": 4}))
    check_data(dataset, ir, losses, limit=4)
    batch = collate([dataset[i] for i in range(4)])        # sequences of different lengths, padded
    assert not batch["mask"].all()
    model.train()
    loss, _ = objective(forward(model, batch, model_inputs(model)), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bert_crf_tagger_ignores_padding():
    """The mask reaches every attention layer and the CRF: padding a sequence changes
    nothing at its real frames."""
    model = dagnet.compile(dagnet.load(SPECS / "bert_crf_tagger.yaml")).eval()
    frames = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([frames, torch.randn(1, 7, 8)], dim=1)
    mask = torch.arange(27) < 20
    with torch.no_grad():
        alone = model(frames=frames, mask=torch.ones(1, 20, dtype=torch.bool))
        within = model(frames=padded, mask=mask[None])
    torch.testing.assert_close(within[:, :20], alone, rtol=1e-5, atol=1e-6)


def _hf_vit_in_spec_order(state: dict, layers: int) -> list:
    """transformers' ViT tensors in specs/vit's order (torchvision's): its separate query, key
    and value projections stacked into multihead_attention's one in_proj."""
    e = "vit.embeddings."
    out = [state[e + "cls_token"], state[e + "patch_embeddings.projection.weight"],
           state[e + "patch_embeddings.projection.bias"], state[e + "position_embeddings"]]
    for i in range(layers):
        p = f"vit.layers.{i}."
        qkv = [p + f"attention.{n}_proj" for n in "qkv"]
        out += [state[p + "layernorm_before.weight"], state[p + "layernorm_before.bias"],
                torch.cat([state[k + ".weight"] for k in qkv]), torch.cat([state[k + ".bias"] for k in qkv]),
                state[p + "attention.o_proj.weight"], state[p + "attention.o_proj.bias"],
                state[p + "layernorm_after.weight"], state[p + "layernorm_after.bias"],
                state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"],
                state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"]]
    return out + [state["vit.layernorm.weight"], state["vit.layernorm.bias"],
                  state["classifier.weight"], state["classifier.bias"]]


def test_vit_equals_transformers_vit_for_image_classification(transformers):
    params = {"image_size": 32, "patch": 8, "dim": 48, "layers": 2, "heads": 3, "mlp_dim": 96, "classes": 5}
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                                    num_attention_heads=3, intermediate_size=96, layer_norm_eps=1e-6,
                                    num_labels=5)
    reference = randomise(transformers.ViTForImageClassification(config)).double().eval()
    model = dagnet.compile(dagnet.load(SPECS / "vit.yaml", params)).double().eval()
    ours = model.state_dict()
    theirs = _hf_vit_in_spec_order(reference.state_dict(), 2)
    assert [tuple(t.shape) for t in theirs] == [tuple(t.shape) for t in ours.values()]
    model.load_state_dict(dict(zip(ours, theirs)))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():        # different attention kernels: equal to rounding, in float64
        torch.testing.assert_close(model(x), reference(pixel_values=x).logits, rtol=0, atol=1e-12)
