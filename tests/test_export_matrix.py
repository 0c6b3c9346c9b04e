"""The export matrix of docs/backend.md is what the code does: every spec in specs/ in every format,
written by `dagnet compile -o`, reloaded in a fresh process and compared (dagnet.export_matrix)."""

import pytest

from dagnet.export_matrix import QUICK, all_specs, check_in_subprocess, documented

DOCUMENTED = documented()


def test_every_spec_has_a_row():
    assert sorted(DOCUMENTED) == all_specs()


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in QUICK else [pytest.mark.slow])
                                  for n in all_specs()])
def test_spec_exports_as_documented(name):
    assert check_in_subprocess(name) == DOCUMENTED.get(name)
