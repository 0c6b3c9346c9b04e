"""dagnet view in a real browser: headless Chromium driven by selenium over the generated pages.

Skipped where selenium, Chromium or its driver is missing (`make test-browser`
installs them). Screenshots go to a scratch folder; with
DAGNET_UPDATE_SCREENSHOTS=1 they are written to docs/images/ (docs/view.md).
"""

from __future__ import annotations

import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dagnet.view import diff_specs, view_html

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By            # noqa: E402
from selenium.webdriver.common.keys import Keys        # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (BROWSER and DRIVER),
                                reason="no Chromium and chromedriver (make test-browser installs them)")
OPEN_LIMIT_MS = 2000
EXPAND_LIMIT_MS = 200


def big_spec(folder: Path, stages: int = 113) -> Path:
    """A 10,000-node model: `stages` repetitions of a stage of 11 residual units of 8 layers."""
    spec = folder / "big.yaml"
    spec.write_text(f"""dagnet: 1
name: big
inputs:
  x: {{shape: [T, 16]}}
blocks:
  unit:
    nodes:
      a: {{op: linear, in: x, out_features: 16}}
      b: {{op: relu, in: a}}
      c: {{op: linear, in: b, out_features: 16}}
      d: {{op: layer_norm, in: c}}
      e: {{op: relu, in: d}}
      f: {{op: linear, in: e, out_features: 16}}
      g: {{op: gelu, in: f}}
      s: {{op: add, in: [x, g]}}
    outputs: [s]
  stage:
    nodes:
      units: {{block: unit, in: x, repeat: 11}}
      n: {{op: layer_norm, in: units}}
    outputs: [n]
nodes:
  stages: {{block: stage, in: x, repeat: {stages}}}
  head: {{op: linear, in: stages, out_features: 4}}
outputs: [head]
""")
    return spec


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    out = {}
    for name, spec, dims in (("resnet50", SPECS / "resnet50.yaml", {"H": 224, "W": 224}),
                             ("densenet121", SPECS / "densenet121.yaml", {"H": 224, "W": 224}),
                             ("hcrf", SPECS / "hcrf_gestures.yaml", None)):
        out[name] = folder / f"{name}.html"
        out[name].write_text(view_html(spec, dims), encoding="utf-8")
    out["big"] = folder / "big.html"
    out["big"].write_text(view_html(big_spec(folder)), encoding="utf-8")
    from test_view import flat_spec
    out["flat"] = folder / "flat.html"
    out["flat"].write_text(view_html(flat_spec(folder, 10_000)), encoding="utf-8")
    bad = folder / "bad.yaml"
    bad.write_text((SPECS / "resnet18.yaml").read_text().replace("in: pool}", "in: poo}")
                   .replace("out_features: classes", "out_feature: classes"))
    (folder / "blocks").mkdir()
    for f in (SPECS / "blocks").iterdir():
        (folder / "blocks" / f.name).write_text(f.read_text())
    out["bad"] = folder / "bad.html"
    out["bad"].write_text(view_html(bad), encoding="utf-8")
    b = folder / "b.yaml"
    b.write_text((SPECS / "resnet18.yaml").read_text()
                 .replace("layer4: {block: basic, in: layer3, repeat: 2", "layer4: {block: basic, in: layer3, repeat: 3")
                 .replace("classes: 1000", "classes: 10"))
    _, html = diff_specs(SPECS / "resnet18.yaml", b, dims={"H": 224, "W": 224})
    out["diff"] = folder / "diff.html"
    out["diff"].write_text(html, encoding="utf-8")
    out["shots"] = ROOT / "docs" / "images" if os.environ.get("DAGNET_UPDATE_SCREENSHOTS") else folder
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    except Exception as exc:                # noqa: BLE001 - a broken install is a skip, not a failure
        pytest.skip(f"Chromium did not start: {exc}")
    driver.downloads = downloads
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> dict:
    driver.get(path.as_uri())
    timings = driver.execute_script("return window.dagnetView && window.dagnetView.timings")
    assert timings, "the page's script did not run"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    return timings


def visible(driver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#viewport .dn-node"))


def node(driver, path: str):
    return driver.find_element(By.CSS_SELECTOR, f'#viewport .dn-node[data-path="{path}"]')


def screenshot(driver, pages, name: str) -> Path:
    """Save a screenshot and check that it is a drawing: many non-white pixels, several colours."""
    from PIL import Image
    path = pages["shots"] / f"view_{name}.png"
    driver.save_screenshot(str(path))
    image = Image.open(path).convert("RGB")
    pixels = image.resize((image.width // 4, image.height // 4)).getdata()
    ink = sum(1 for p in pixels if sum(p) < 600)
    assert ink > 500, f"{name}: the screenshot is blank"
    assert len(set(pixels)) > 20
    return path


def test_resnet50_expand_search_details_export(browser, pages):
    open_page(browser, pages["resnet50"])
    assert visible(browser) == 9                    # image, stem, layer1..4, pool, flat, fc
    assert browser.find_element(By.ID, "count").text == "9 shown of 176 nodes"
    layer3 = node(browser, "layer3")
    assert "layer3 × 6" in layer3.text
    layer3.click()                                  # a repeat unfolds to its six instances
    assert visible(browser) == 8 + 6
    assert [n.get_attribute("data-path") for n in browser.find_elements(
        By.CSS_SELECTOR, '#viewport .dn-node[data-path^="layer3."]')] == [f"layer3.{k}" for k in range(6)]
    node(browser, "layer3.2").click()               # and an instance to its layers
    assert node(browser, "layer3.2.sum") and visible(browser) > 14
    node(browser, "layer3.2.sum").click()
    details = browser.find_element(By.ID, "details").text
    assert "add" in details and "[1024, 14, 14]" in details and "resnet.yaml:" in details
    crumbs = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#crumbs a")]
    assert crumbs == ["resnet50", "layer3", "2", "sum"]
    screenshot(browser, pages, "resnet50")
    label = browser.find_element(By.CSS_SELECTOR, '.dn-cluster-label[data-id="%s"]' % browser.execute_script(
        "return dagnetView.byPath('layer3')"))
    label.click()                                   # collapse: back to the top level
    assert visible(browser) == 9
    box = browser.find_element(By.ID, "q")
    box.send_keys("conv2")
    assert "match" in browser.find_element(By.ID, "results").text
    box.clear()
    box.send_keys("layer2.3.body.3", Keys.ENTER)    # go to a node deep inside a collapsed repeat
    assert node(browser, "layer2.3.body.3")
    details = browser.find_element(By.ID, "details").text
    assert "op conv2d" in details and "kernel_size 3" in details and "[128, 28, 28]" in details
    svg = browser.execute_script("return dagnetView.exportSVG(false)")
    tree = ET.fromstring(svg)
    drawn = tree.findall(".//{http://www.w3.org/2000/svg}g[@class='dn-node']") + tree.findall(
        ".//{http://www.w3.org/2000/svg}g[@class='dn-node dn-sel']")
    assert len(drawn) == visible(browser)
    browser.find_element(By.ID, "copy").click()
    assert browser.find_element(By.ID, "cmd").get_attribute("value").endswith(
        "resnet50.yaml -o resnet50.svg --depth 3 --dim H=224 --dim W=224")
    browser.find_element(By.ID, "export").click()               # the button downloads the same drawing
    saved = browser.downloads / "resnet50.svg"
    for _ in range(100):
        if saved.exists() and saved.stat().st_size:
            break
        time.sleep(0.05)
    assert len(ET.parse(saved).getroot().findall(".//{http://www.w3.org/2000/svg}g[@data-path]")) == len(drawn)


def test_hover_shows_details(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains
    open_page(browser, pages["resnet50"])
    ActionChains(browser).move_to_element(node(browser, "fc")).perform()
    details = browser.find_element(By.ID, "details").text
    assert "op linear" in details and "2,049,000" in details and "resnet50.yaml:" in details


def test_densenet121_expand_all_and_collapse_all(browser, pages):
    open_page(browser, pages["densenet121"])
    total = browser.execute_script("return window.dagnetView.items.filter(i => i.t === 'n').length")
    first = visible(browser)
    assert 0 < first < 30
    browser.find_element(By.ID, "expand-all").click()
    assert visible(browser) == total
    browser.find_element(By.ID, "collapse-all").click()
    assert visible(browser) == first
    top = browser.execute_script("return dagnetView.items[0].children.map(c => dagnetView.items[c].path)")
    block = next(p for p in top if browser.execute_script(
        f"return dagnetView.items[dagnetView.byPath('{p}')].t === 'g' && "
        f"dagnetView.items[dagnetView.byPath('{p}')].size > 20"))
    node(browser, block).click()
    assert visible(browser) > first
    screenshot(browser, pages, "densenet121")


def test_ten_thousand_nodes_open_and_expand_fast(browser, pages):
    start = time.perf_counter()
    timings = open_page(browser, pages["big"])
    wall = (time.perf_counter() - start) * 1000
    since_navigation = browser.execute_script("return performance.now()")
    total = browser.execute_script("return window.dagnetView.items.filter(i => i.t === 'n').length")
    assert total >= 10_000
    assert visible(browser) == 3
    expand = [browser.execute_script(f"return dagnetView.expand(dagnetView.byPath('{p}'))")
              for p in ("stages", "stages.56", "stages.56.units", "stages.56.units.5")]
    print(f"\n10k-node page: script {timings['open']:.0f} ms, load {wall:.0f} ms wall; "
          f"expand {', '.join(f'{t:.0f}' for t in expand)} ms")
    assert timings["open"] < OPEN_LIMIT_MS and wall < OPEN_LIMIT_MS + 1000 and since_navigation > 0
    assert max(expand) < EXPAND_LIMIT_MS
    assert node(browser, "stages.56.units.5.s")
    browser.execute_script("dagnetView.reveal(dagnetView.byPath('stages.56.units.5.s'))")
    screenshot(browser, pages, "big")


def test_errors_are_listed_and_the_valid_part_drawn(browser, pages):
    open_page(browser, pages["bad"])
    errors = browser.find_element(By.ID, "errors").text
    assert "2 errors" in errors and "bad.yaml:25:" in errors and "unknown node `poo`" in errors
    assert "out_feature" in errors
    assert node(browser, "layer4") and node(browser, "pool")
    assert "flat (?)" in node(browser, "flat").text
    screenshot(browser, pages, "errors")


def test_diff_page_colours_changes(browser, pages):
    open_page(browser, pages["diff"])
    changes = browser.find_element(By.ID, "changes").text
    assert "+ layer4.2.body.0 (conv2d)" in changes and "fc (linear): out_features 1000 -> 10" in changes
    browser.find_element(By.CSS_SELECTOR, "#changes .dn-added").click()     # go to the first added node
    added = node(browser, "layer4.2.body.0")
    assert added.find_element(By.CSS_SELECTOR, "rect").get_attribute("stroke") == "#2e7d32"
    assert node(browser, "fc").find_element(By.CSS_SELECTOR, "rect").get_attribute("stroke") == "#ef6c00"
    screenshot(browser, pages, "diff")


def test_graphical_model_view(browser, pages):
    open_page(browser, pages["hcrf"])
    button = browser.find_element(By.ID, "model-view")
    assert button.is_displayed()
    button.click()
    img = browser.find_element(By.CSS_SELECTOR, "#model img")
    assert img.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", img) > 50


def test_hostile_text_in_a_spec_stays_text(browser, tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text('dagnet: 1\nname: "<img src=x onerror=window.pwned=1>\\"</script>"\n'
                    "inputs:\n  x: {shape: [4]}\nnodes:\n  fc: {op: linear, in: x, out_features: 2}\n"
                    "outputs: [fc]\n")
    page = tmp_path / "evil.html"
    page.write_text(view_html(spec), encoding="utf-8")
    open_page(browser, page)
    assert browser.find_element(By.ID, "title").text == '<img src=x onerror=window.pwned=1>"</script>'
    assert browser.execute_script("return [document.querySelectorAll('img').length, window.pwned]") == [0, None]
    assert visible(browser) == 2


def test_serve_reloads_on_save_and_keeps_what_is_open(browser, tmp_path):
    import threading

    from dagnet.view.serve import serve
    spec = tmp_path / "m.yaml"
    spec.write_text("dagnet: 1\nname: first\ninputs:\n  x: {shape: [4]}\nnodes:\n"
                    "  body: {in: x, seq: linear(8) -> relu -> linear(8)}\n"
                    "  fc: {op: linear, in: body, out_features: 2}\noutputs: [fc]\n")
    ready = threading.Event()
    threading.Thread(target=serve, args=(spec, {}, {}, 0, False, ready), daemon=True).start()
    assert ready.wait(30)
    try:
        browser.get(ready.url)
        node(browser, "body").click()
        assert node(browser, "body.2")
        time.sleep(1.2)                                 # the page has read the first version
        spec.write_text(spec.read_text().replace("name: first", "name: second"))
        os.utime(spec, ns=(spec.stat().st_atime_ns, spec.stat().st_mtime_ns + 10**9))
        title = "var t = document.getElementById('title'); return t && t.textContent"  # no element to go stale
        for _ in range(100):
            if browser.execute_script(title) == "second":
                break
            time.sleep(0.1)
        assert browser.execute_script(title) == "second"
        time.sleep(0.2)
        assert node(browser, "body.2")                  # still open after the reload
    finally:
        ready.server.shutdown()


def test_ten_thousand_nodes_without_blocks_open_fast(browser, pages):
    timings = open_page(browser, pages["flat"])
    assert browser.execute_script("return window.dagnetView.items.filter(i => i.t === 'n').length") == 10_001
    assert visible(browser) == 101                  # the chain in ranges of 100
    ms = browser.execute_script("return dagnetView.expand(dagnetView.items[0].children[50])")
    print(f"\nflat 10k-node page: script {timings['open']:.0f} ms; expand a range {ms:.0f} ms")
    assert timings["open"] < OPEN_LIMIT_MS and ms < EXPAND_LIMIT_MS
    browser.find_element(By.ID, "q").send_keys("n5050", Keys.ENTER)
    assert node(browser, "n5050")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#crumbs a")] == ["flat", "n4999 … n5098", "n5050"]
