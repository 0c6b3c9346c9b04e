"""dagnet view / dagnet diff without a browser: the page's embedded data for every spec, escaping, diff."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dagnet.cli import main
from dagnet.loader import load
from dagnet.view import diff_specs, view_html
from dagnet.view.page import embed_json

SPECS = Path(__file__).resolve().parent.parent / "specs"
ALL_SPECS = sorted(SPECS.glob("*.yaml")) + sorted(SPECS.glob("*.dag"))
DATA = re.compile(r'<script type="application/json" id="dagnet-data">(.*?)</script>', re.S)


def page_data(html: str) -> dict:
    found = DATA.findall(html)
    assert len(found) == 1
    return json.loads(found[0])


def test_every_spec_makes_a_page_whose_data_is_the_model():
    assert len(ALL_SPECS) > 40
    for spec in ALL_SPECS:
        html = view_html(spec, model_view=False)
        data = page_data(html)
        ir = load(spec)
        nodes = {it["path"]: it for it in data["items"] if it["t"] == "n"}
        assert set(nodes) == set(ir.graph.nodes), spec
        assert data["nodeCount"] == ir.graph.number_of_nodes()
        assert len(data["edges"]) == ir.graph.number_of_edges()
        assert data["errors"] == []
        root = data["items"][0]
        assert root["kind"] == "root" and root["params"] == sum(it["params"] for it in nodes.values())
        for path, it in nodes.items():            # every node located in the spec it came from
            assert re.match(r".+:\d+:\d+$", it["loc"]), (spec, path)
            assert it["shape"].startswith("["), (spec, path)
        # children point back at their parent; every group's lifted edges join two of its children
        for k, it in enumerate(data["items"]):
            for c in it.get("children", []):
                assert data["items"][c]["parent"] == k
            for a, b in it.get("edges", []):
                assert a in it["children"] and b in it["children"]
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")   # no network request
        assert "https://" not in html


def test_resnet50_groups_details_and_dims():
    data = page_data(view_html(SPECS / "resnet50.yaml", dims={"H": 224, "W": 224}))
    items = {it["path"]: it for it in data["items"]}
    top = [data["items"][c]["path"] for c in data["items"][0]["children"]]
    assert top == ["image", "stem", "layer1", "layer2", "layer3", "layer4", "pool", "flat", "fc"]
    assert items["layer3"]["kind"] == "repeat" and items["layer3"]["count"] == 6
    assert items["layer3"]["title"] == "layer3 × 6"
    assert items["layer3.2"]["blockName"] == "bottleneck"
    conv = items["layer1.0.body.0"]
    assert conv["op"] == "conv2d" and conv["args"]["out_channels"] == "64"
    assert conv["shapeDims"] == "[64, 56, 56]" and conv["params"] == 4096 and conv["macs"] == 4096 * 56 * 56
    assert conv["loc"].startswith(str(SPECS / "blocks" / "resnet.yaml")) or "resnet.yaml" in conv["loc"]
    assert "conv2d" in conv["src"]
    assert data["items"][0]["params"] == 25_557_032


def test_hostile_names_are_escaped(tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text("dagnet: 1\nname: evil\ninputs:\n  x: {shape: [4]}\n"
                    "nodes:\n  fc: {op: linear, in: x, out_features: 2}\noutputs: [fc]\n"
                    "doc: \"</script><script>alert(1)</script>\"\n")
    html = view_html(spec)
    assert html.count("</script>") == 2             # the data block's and the code's own
    text = embed_json({"name": "</script><!-- & \u2028 'q\""})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["name"] == "</script><!-- & \u2028 'q\""


def test_a_spec_with_errors_lists_them_and_draws_the_rest(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("dagnet: 1\nname: bad\ninputs:\n  x: {shape: [4]}\nnodes:\n"
                    "  a: {op: linear, in: x, out_features: 8}\n"
                    "  b: {op: relu, in: aa}\n"
                    "  c: {op: linear, in: a, out_feature: 2}\noutputs: [c]\n")
    data = page_data(view_html(spec))
    assert [(e["line"], e["message"]) for e in data["errors"]] == [
        (7, "unknown node `aa`"), (8, "`linear` has no argument `out_feature`")]
    assert data["errors"][0]["source"] == "b: {op: relu, in: aa}"
    nodes = {it["path"]: it for it in data["items"] if it["t"] == "n"}
    assert nodes["a"]["shape"] == "[8]" and not nodes["a"]["error"]
    assert nodes["b"]["error"] and nodes["c"]["error"]


def test_a_spec_that_does_not_parse_opens_with_its_error(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("dagnet: 1\nname: broken\nnodes: [\n")
    data = page_data(view_html(spec))
    assert data["nodeCount"] == 0 and len(data["errors"]) == 1 and data["errors"][0]["line"] >= 1


def _variant(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "blocks").mkdir()
    for f in (SPECS / "blocks").iterdir():
        (tmp_path / "blocks" / f.name).write_text(f.read_text())
    text = (SPECS / "resnet18.yaml").read_text()
    a = tmp_path / "a.yaml"
    a.write_text(text)
    b = tmp_path / "b.yaml"
    b.write_text(text.replace("layer4: {block: basic, in: layer3, repeat: 2", "layer4: {block: basic, in: layer3, repeat: 3")
                 .replace("  fc: {op: linear, in: flat", "  classifier: {op: linear, in: flat")
                 .replace("outputs: [fc]", "outputs: [classifier]").replace("classes: 1000", "classes: 10"))
    return a, b


def test_diff_reports_added_changed_and_renamed(tmp_path, capsys):
    a, b = _variant(tmp_path)
    result, html = diff_specs(a, b)
    kinds = {(c.kind, c.path) for c in result.changes}
    assert ("added", "layer4.2.body.0") in kinds and ("added", "layer4.2.out") in kinds
    assert ("changed", "pool") in kinds
    renamed = [c for c in result.changes if c.kind == "renamed"]
    assert len(renamed) == 1 and renamed[0].old_path == "fc" and renamed[0].path == "classifier"
    assert "out_features 1000 -> 10" in renamed[0].details and "params 513,000 -> 5,130" in renamed[0].details
    assert not [c for c in result.changes if c.kind == "removed"]
    data = page_data(html)
    status = {data["items"][int(k)]["path"]: v for k, v in data["diff"]["status"].items()}
    assert status["layer4.2.body.0"] == "added" and status["pool"] == "changed"
    out = tmp_path / "d.html"
    assert main(["diff", str(a), str(b), "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert "> fc -> classifier (linear): out_features 1000 -> 10" in text
    assert text.strip().endswith("parameters 11,689,512 -> 15,902,282")
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_diff_of_removed_nodes_and_of_a_spec_with_itself(tmp_path, capsys):
    a, b = _variant(tmp_path)
    assert main(["diff", str(b), str(a)]) == 1
    text = capsys.readouterr().out
    assert "- layer4.2.body.0 (conv2d)" in text and "> classifier -> fc (linear)" in text
    assert main(["diff", str(a), str(a)]) == 0
    assert capsys.readouterr().out.strip().endswith("no differences")
    assert main(["diff", str(a), str(tmp_path / "missing.yaml")]) == 2


def test_every_spec_diffs_equal_to_its_other_front_end(capsys):
    """Each YAML spec and its .dag twin build the same graph: `dagnet diff` says so, exit 0."""
    twins = [(y, y.with_suffix(".dag")) for y in sorted(SPECS.glob("*.yaml")) if y.with_suffix(".dag").exists()]
    assert len(twins) > 40
    for y, d in twins:
        result, _ = diff_specs(y, d)
        assert result.equal, (y, result.text())


def test_view_command_writes_the_page(tmp_path, capsys):
    out = tmp_path / "v.html"
    assert main(["view", str(SPECS / "digits_cnn.yaml"), "-o", str(out), "--dim", "H=8"]) == 0
    assert page_data(out.read_text())["name"] == "digits-cnn"
    with pytest.raises(SystemExit):
        main(["view", str(tmp_path / "nope.yaml")])


def test_structured_specs_carry_the_graphical_model_figure():
    data = page_data(view_html(SPECS / "hcrf_gestures.yaml"))
    assert data["modelSvg"]
    import base64
    assert b"<svg" in base64.b64decode(data["modelSvg"])
    assert page_data(view_html(SPECS / "resnet18.yaml"))["modelSvg"] is None


def test_serve_rebuilds_the_page_when_the_spec_is_saved(tmp_path):
    import os
    import threading
    import urllib.request

    from dagnet.view.serve import serve
    spec = tmp_path / "m.yaml"
    spec.write_text("dagnet: 1\nname: first\ninputs:\n  x: {shape: [4]}\n"
                    "nodes:\n  fc: {op: linear, in: x, out_features: 2}\noutputs: [fc]\n")
    ready = threading.Event()
    thread = threading.Thread(target=serve, args=(spec, {}, {}, 0, False, ready), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        get = lambda p: urllib.request.urlopen(ready.url + p, timeout=30).read().decode()   # noqa: E731
        first, version = page_data(get("")), get("version")
        assert first["name"] == "first" and first["serve"] is True
        spec.write_text(spec.read_text().replace("name: first", "name: second"))
        os.utime(spec, ns=(spec.stat().st_atime_ns, spec.stat().st_mtime_ns + 10**9))
        assert get("version") != version
        assert page_data(get(""))["name"] == "second"
        with pytest.raises(urllib.error.HTTPError):
            get("../etc/passwd")
    finally:
        ready.server.shutdown()
        thread.join(10)


def flat_spec(folder: Path, n: int) -> Path:
    """A chain of ``n`` layers with no block at all, as an import without recovered blocks gives."""
    lines = ["dagnet: 1", "name: flat", "inputs:", "  x: {shape: [T, 16]}", "nodes:"]
    prev = "x"
    for i in range(n):
        lines.append(f"  n{i}: {{op: relu, in: {prev}}}" if i % 2 else f"  n{i}: {{op: linear, in: {prev}, out_features: 16}}")
        prev = f"n{i}"
    spec = folder / "flat.yaml"
    spec.write_text("\n".join(lines + [f"outputs: [{prev}]"]) + "\n")
    return spec


def test_a_long_flat_group_is_split_into_ranges(tmp_path):
    from dagnet.view.model import MAX_CHILDREN
    data = page_data(view_html(flat_spec(tmp_path, 400)))
    items = data["items"]
    assert len(items[0]["children"]) <= MAX_CHILDREN
    ranges = [it for it in items if it["t"] == "g" and it["kind"] == "range"]
    assert len(ranges) == 5 and ranges[0]["title"] == "x … n79 (81 nodes)"
    assert sum(r["size"] for r in ranges) == 401 == data["nodeCount"]
    assert all(items[c]["parent"] == items.index(r) for r in ranges for c in r["children"])
    assert [a for r in ranges for a in r.get("edges", [])]          # the chain inside each range
    assert len(items[0]["edges"]) == 4                                # and from one range to the next


def test_view_and_diff_never_load_torch(tmp_path):
    """Like `dagnet render`, the viewer reads specs through the torch-free loader."""
    import subprocess
    import sys
    script = f"""
import sys, contextlib, io
from dagnet.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["view", r"{SPECS / 'hcrf_gestures.yaml'}", "-o", r"{tmp_path / 'v.html'}"]) == 0
    assert main(["diff", r"{SPECS / 'resnet18.yaml'}", r"{SPECS / 'resnet18.dag'}"]) == 0
sys.exit(1 if "torch" in sys.modules else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_diff_matches_a_renamed_block_by_structure(tmp_path, capsys):
    a, _ = _variant(tmp_path)
    b = tmp_path / "renamed.yaml"
    b.write_text(a.read_text().replace("layer4", "stage4"))
    result, _ = diff_specs(a, b)
    assert {c.kind for c in result.changes} == {"renamed"} and len(result.changes) == 16
    assert result.matched["layer4.1.body.3"] == "stage4.1.body.3"
    assert main(["diff", str(a), str(b)]) == 1
    assert "> layer4 -> stage4 (16 nodes renamed)" in capsys.readouterr().out.splitlines()
