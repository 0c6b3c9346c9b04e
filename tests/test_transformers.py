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
