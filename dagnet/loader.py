"""The torch-free front half of the pipeline: ``parse`` and ``load`` (spec -> checked IR).

Reading, checking, summarising and drawing a spec need only this module, so
those commands never import torch or the emitter; ``dagnet.api.compile`` is
the torch half. (Not named ``dagnet/load.py``: importing a submodule called
``load`` would replace the ``dagnet.load`` function on the package.)
"""

from __future__ import annotations

from pathlib import Path

from dagnet.check import check
from dagnet.errors import ErrorLog, SpecError
from dagnet.ir import IR, expand
from dagnet.spec.frontends import load_spec


def parse(source):
    """Parse a spec (path or text) with the front end its suffix names (text given directly is YAML)."""
    return load_spec(source)


def load(source, overrides: dict | None = None, training: bool = False) -> IR:
    """Parse, expand and check a spec; return the checked IR (shapes filled in).

    ``source`` is a path (``.yaml``/``.yml``/``.dag``) or spec text;
    ``overrides`` sets parameters like the CLI's ``--set k=v``. With
    ``training`` the losses and the ``train:`` section are checked too, and
    their errors are raised together with the graph's, in file order.
    """
    spec = parse(Path(source) if isinstance(source, Path) else source)
    errors = ErrorLog()
    ir = expand(spec, overrides, errors)
    try:
        check(ir, errors)
    except SpecError:
        if not training:
            raise
    if training:
        from dagnet.check_train import check_training
        check_training(ir, errors)
        errors.raise_if_any()
    return ir
