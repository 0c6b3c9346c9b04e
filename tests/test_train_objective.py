"""dagnet.train.objective and dagnet.train.metrics: losses from spec dicts, and task metrics."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dagnet.data import DataError
from dagnet.fields.protocol import Field
from dagnet.train import ConfusionMatrix, ObjectiveError, Task, build_objective, infer_task


class RecordingCRF(Field):
    """Stands in for a chain CRF node: remembers what nll was called with, decodes per position."""

    exact = frozenset({"nll", "decode"})
    num_labels = 3

    def nll(self, potentials, tags, mask=None, reduction="mean"):
        self.called = (potentials, tags, mask, reduction)
        return potentials.sum() * 0 + 2.5

    def decode(self, potentials, mask=None):
        labels = potentials.argmax(-1)
        labels = labels if mask is None else labels.masked_fill(~mask, -1)
        return labels, potentials.max(-1).values.sum(-1)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.crf = RecordingCRF()


def test_cross_entropy_and_weighted_sum():
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    objective = build_objective(
        [
            {"op": "cross_entropy", "output": "logits", "target": "label"},
            {"op": "mse", "output": "value", "target": "value", "weight": 0.5},
        ],
        nn.Module(),
    )
    value = torch.randn(6, 2)
    loss, parts = objective({"logits": logits, "value": value}, {"label": y, "value": torch.zeros(6, 2)})
    expected_ce, expected_mse = F.cross_entropy(logits, y), (value**2).mean()
    assert torch.allclose(loss, expected_ce + 0.5 * expected_mse)
    assert parts["cross_entropy"] == pytest.approx(expected_ce.item())
    assert parts["mse"] == pytest.approx(expected_mse.item()) and parts["loss"] == pytest.approx(loss.item())


def test_cross_entropy_on_sequences_respects_the_mask():
    logits, tags = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    objective = build_objective([{"op": "cross_entropy", "output": "e", "target": "t", "mask": "m"}], nn.Module())
    loss, _ = objective({"e": logits}, {"t": tags, "m": mask})
    assert torch.allclose(loss, F.cross_entropy(logits[mask], tags[mask]))


def test_crf_nll_calls_the_node_with_potentials_target_and_mask():
    model = Tagger()
    objective = build_objective(
        [{"op": "crf_nll", "node": "crf", "potentials": "emissions", "target": "tags", "mask": "mask"}], model
    )
    emissions, tags, mask = torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4).bool()
    loss, parts = objective({"emissions": emissions}, {"tags": tags, "mask": mask})
    assert parts == {"loss": 2.5}
    potentials, target, passed_mask, reduction = model.crf.called
    assert potentials is emissions and target is tags and passed_mask is mask and reduction == "mean"


def test_duplicate_names_are_numbered():
    objective = build_objective([{"op": "mse", "output": "a", "target": "a"}] * 2, nn.Module())
    assert [t.name for t in objective.terms] == ["mse", "mse_2"]


@pytest.mark.parametrize(
    "loss, message",
    [
        ({"op": "cross_entropie", "output": "y", "target": "y"}, "unknown op 'cross_entropie' \\(did you mean 'cross_entropy'"),
        ({"op": "mse", "output": "y", "targets": "y"}, "unknown key 'targets' \\(did you mean 'target'"),
        ({"op": "mse", "output": "y"}, "missing 'target'"),
        ({"op": "mse", "output": "y", "target": "y", "weight": "x"}, "weight must be a number"),
        ({"op": "crf_nll", "node": "crf2", "potentials": "e", "target": "t"}, "no node 'crf2' \\(did you mean 'crf'"),
    ],
)
def test_build_errors(loss, message):
    with pytest.raises(ObjectiveError, match=message):
        build_objective([loss], Tagger())


def test_errors_at_call_name_what_is_available():
    objective = build_objective([{"op": "mse", "output": "y", "target": "y"}], nn.Module())
    with pytest.raises(ObjectiveError, match="no output 'y' \\(available: logits\\)"):
        objective({"logits": torch.zeros(1)}, {"y": torch.zeros(1)})
    with pytest.raises(ObjectiveError, match="output 'y' has shape \\(2,\\) but target 'y' has shape \\(3,\\)"):
        objective({"y": torch.zeros(2)}, {"y": torch.zeros(3)})


def test_node_without_nll_is_rejected():
    model = nn.Sequential()
    model.add_module("crf", nn.Linear(2, 2))
    with pytest.raises(ObjectiveError, match="node 'crf' is a Linear, not a structured node"):
        build_objective([{"op": "crf_nll", "node": "crf", "potentials": "e", "target": "t"}], model)


def test_accuracy_and_confusion():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]), torch.ones(4, dtype=torch.bool))
    assert cm.counts.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert cm.summary("classification") == {"accuracy": 0.75}


def test_iou_ignores_ignore_index():
    target = torch.tensor([[0, 0, 1, -1], [1, 1, 2, 2]])
    predicted = torch.tensor([[0, 1, 1, 2], [1, 1, 2, 0]])
    task = Task("logits", "mask", ignore_index=-1)
    cm = ConfusionMatrix(3)
    cm.update(predicted, target, task.valid({"mask": target}))
    summary = cm.summary("segmentation")
    # class 0: tp 1, fp 1 (last pixel), fn 1 -> 1/3; class 1: tp 3, fp 1, fn 0 -> 3/4; class 2: tp 1, fn 1 -> 1/2
    assert summary["iou"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert summary["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert summary["pixel_accuracy"] == pytest.approx(5 / 7)


def test_macro_f1_respects_the_mask_and_skips_absent_classes():
    target = torch.tensor([[0, 1, 1, 2], [0, 0, 1, 1]])
    predicted = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)  # hides both class-2 and a wrong pixel
    cm = ConfusionMatrix(4)
    cm.update(predicted, target, Task("e", "t", mask="m").valid({"t": target, "m": mask}))
    summary = cm.summary("sequence")
    f1_0, f1_1 = 2 * 3 / (2 * 3 + 1), 2 * 2 / (2 * 2 + 1)
    assert summary == {"accuracy": pytest.approx(5 / 6), "macro_f1": pytest.approx((f1_0 + f1_1) / 2)}


def test_labels_outside_the_model_classes_are_reported():
    with pytest.raises(DataError, match="labels \\[7\\] are outside 0..2"):
        ConfusionMatrix(3).update(torch.tensor([0]), torch.tensor([7]), torch.tensor([True]))


def test_infer_task_and_crf_predictions():
    task = infer_task([{"op": "mse", "output": "y", "target": "y"},
                       {"op": "crf_nll", "node": "crf", "potentials": "e", "target": "t", "mask": "m"}])
    assert task == Task("e", "t", mask="m", node="crf")
    assert infer_task([{"op": "mse", "output": "y", "target": "y"}]) is None
    emissions = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    labels = task.predict(Tagger(), {"e": emissions}, {"t": torch.zeros(2, 3, dtype=torch.long), "m": mask})
    assert labels.tolist() == [[1, 0, 1], [0, 1, -1]]
    assert task.resolve_kind(emissions) == "sequence"
