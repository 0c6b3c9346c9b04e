"""The viewer's HTML: one self-contained file, the model embedded as JSON.

No network request and no JavaScript built from spec text: the data goes into a
``<script type="application/json">`` block (``<``, ``>`` and ``&`` written as
``\\u003c`` ... so no spec string can close the block), and the page reads it
with ``JSON.parse``; every string then reaches the DOM through ``textContent``.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'">
<title>dagnet view</title>
<style>{css}</style></head>
<body><div id="app">
<div id="bar"><h1 id="title"></h1>
<button id="expand-all">Expand all</button><button id="collapse-all">Collapse all</button>
<button id="fit">Fit</button>
<input id="q" type="search" placeholder="search name or op (Enter: go)">
<button id="export">Export SVG</button><button id="copy">Copy render command</button>
<button id="model-view" style="display:none">Graphical model</button>
<input id="cmd" readonly style="display:none;width:360px">
<span id="count"></span></div>
<div id="crumbs"></div>
<div id="canvas"><svg id="graph" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="dn-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>
<g id="viewport"></g></svg></div>
<div id="model"></div>
<div id="side"><div id="errors"></div><div id="changes"></div><div id="details"><p>Click a block to open it; hover or click a node for its details.</p></div>
<h2>Search</h2><div id="results"></div></div>
</div>
<script type="application/json" id="dagnet-data">{data}</script>
<script>{js}</script>
</body></html>
"""


def embed_json(data) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, `<!--` or `]]>` can appear."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page(data: dict) -> str:
    """The whole HTML page for ``data`` (from :func:`dagnet.view.model.view_data`)."""
    css = (ASSETS / "view.css").read_text(encoding="utf-8")
    js = "\n".join((ASSETS / name).read_text(encoding="utf-8") for name in ("layout.js", "view.js"))
    return TEMPLATE.format(css=css, js=js, data=embed_json(data))


def model_svg(ir) -> str | None:
    """The graphical-model figure of the structured nodes (`render --view model`), base64, or None."""
    if ir is None or not any(getattr(ir.node(n), "op", None) and _is_field(ir.node(n)) for n in ir.graph.nodes):
        return None
    from dagnet.render import render
    with tempfile.TemporaryDirectory(prefix="dagnet-view-") as tmp:
        out = Path(tmp) / "model.svg"
        try:
            render(ir, out, view="model")
        except Exception:       # noqa: BLE001 - RenderError or a figure it cannot draw: the view works without it
            return None
        return base64.b64encode(out.read_bytes()).decode("ascii")


def _is_field(node) -> bool:
    from dagnet.render.arch import family
    return family(node) == "field"
