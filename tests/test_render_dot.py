"""DOT output against golden files: the same spec gives the same bytes.

Regenerate after an intended change with
``DAGNET_UPDATE_GOLDEN=1 python -m pytest tests/test_render_dot.py`` and read the diff.
"""

import os
from pathlib import Path

import pytest

import dagnet
from dagnet.render import dot_source
from tests.test_render_fixtures import FIELD_OPS, TINY, field_ir

GOLDEN = Path(__file__).parent / "golden" / "render"
UPDATE = os.environ.get("DAGNET_UPDATE_GOLDEN") == "1"

ARCH_CASES = {
    "tiny_depth0": dict(),
    "tiny_depth1": dict(depth=1),
    "tiny_depth2_lr": dict(depth=2, rankdir="LR"),
    "tiny_expand_slides": dict(expand=True, theme="slides", params=False),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.dot"
    if UPDATE or not path.exists():
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"golden file {path.name} was missing and has been written; run again")
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs (see module docstring)"


@pytest.fixture(scope="module")
def tiny():
    return dagnet.load(TINY)


@pytest.mark.parametrize("name", sorted(ARCH_CASES))
def test_arch_dot_matches_golden(tiny, name):
    check_golden(name, dot_source(tiny, **ARCH_CASES[name]))


@pytest.mark.parametrize("op", FIELD_OPS)
def test_model_dot_matches_golden(op):
    args = {"parents": [-1, 0, 0, 1]} if op == "tree_crf" else {}
    check_golden(f"model_{op}", dot_source(field_ir(op, args), view="model"))


def test_dot_is_deterministic_and_uses_spec_paths(tiny):
    first = dot_source(tiny, depth=2)
    assert first == dot_source(dagnet.load(TINY), depth=2)
    assert '"stage.1.body" -> "stage.1.sum"' in first
    assert 'id="stage.0.shortcut"' in first
    assert "20" not in first.split("\n")[0]          # no date in the header line
