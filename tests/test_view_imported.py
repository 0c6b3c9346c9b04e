"""`dagnet view` and `dagnet diff` on a model brought in by `dagnet import` (torchvision's ResNet-18)."""

from __future__ import annotations

import pytest

from dagnet.cli import main
from dagnet.loader import load
from dagnet.view import diff_specs, view_html
from tests.conftest import SPECS
from tests.references import torchvision
from tests.test_view import page_data


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    import dagnet
    path = tmp_path_factory.mktemp("imported") / "resnet18.dag"
    dagnet.import_model(torchvision().models.resnet18()).save(path)
    return path


def test_an_imported_model_opens_folded_with_every_node(imported):
    data = page_data(view_html(imported, model_view=False))
    ir = load(imported)
    nodes = [it for it in data["items"] if it["t"] == "n"]
    assert {it["path"] for it in nodes} == set(ir.graph.nodes) and data["errors"] == []
    top = {data["items"][c]["path"]: data["items"][c] for c in data["items"][0]["children"]}
    assert top["layer1"]["kind"] == "repeat" and top["layer1"]["count"] == 2     # the import's `* 2`
    assert data["items"][0]["params"] == 11_689_512                             # torchvision's resnet18


def test_an_imported_model_diffs_against_the_hand_written_spec_by_structure(imported, capsys):
    result, _ = diff_specs(SPECS / "resnet18.dag", imported)
    kinds = {c.kind for c in result.changes}
    assert "added" not in kinds and "removed" not in kinds and "renamed" in kinds
    assert result.matched["layer4.1.body.3"].startswith("layer4.1.")          # names differ, structure matches
    assert main(["diff", str(SPECS / "resnet18.dag"), str(imported)]) == 1
    assert "parameters 11,689,512 -> 11,689,512" in capsys.readouterr().out
