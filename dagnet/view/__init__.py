"""``dagnet view`` and ``dagnet diff``: explore a model, or compare two, in the browser.

    >>> from dagnet.view import write_view
    >>> write_view("specs/resnet50.yaml", "resnet50.html", dims={"H": 224, "W": 224})

One self-contained HTML file per spec (model.py: IR -> data; page.py: data ->
HTML; assets/: the page's own script and styles), and a structural diff of two
specs (diff.py) shown in the same page and as text.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["view_html", "write_view", "diff_specs"]


def view_html(spec, dims: dict | None = None, overrides: dict | None = None, serve: bool = False,
              model_view: bool = True, version: str | None = None) -> str:
    """The viewer page of the spec at ``spec``; a spec with errors shows them and its valid part.

    ``serve``: the page asks its server for ``version`` once a second and reloads when it changes.
    """
    from dagnet.view.model import load_tolerant, view_data
    from dagnet.view.page import model_svg, page
    ir, errors = load_tolerant(spec, overrides)
    data = view_data(ir, errors, dims, str(spec))
    data["modelSvg"] = model_svg(ir) if model_view and not errors else None
    data["serve"] = serve
    data["version"] = version
    return page(data)


def write_view(spec, out, dims: dict | None = None, overrides: dict | None = None) -> Path:
    out = Path(out)
    out.write_text(view_html(spec, dims, overrides), encoding="utf-8")
    return out


def diff_specs(spec_a, spec_b, dims: dict | None = None, overrides: dict | None = None):
    """``(Diff, html)`` of two specs; a spec that cannot be built raises its SpecError."""
    from dagnet.errors import SpecErrors
    from dagnet.view.diff import diff, diff_view_data
    from dagnet.view.model import load_tolerant, view_data
    from dagnet.view.page import page
    loaded = []
    for spec in (spec_a, spec_b):
        ir, errors = load_tolerant(spec, overrides)
        if errors:
            raise SpecErrors(errors)
        loaded.append(ir)
    result = diff(loaded[0], loaded[1], str(spec_a), str(spec_b))
    data = diff_view_data(result, view_data(loaded[1], [], dims, str(spec_b)))
    data["name"] = f"{loaded[0].name} → {loaded[1].name}"
    return result, page(data)
