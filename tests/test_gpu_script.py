"""bench/gpu/run.sh, the GPU run, kept from rotting on machines without one: its quick mode
at tiny sizes on the CPU (DAGNET_BENCH_DEVICE=cpu) writes every group's rows, and one
group's failure, a child that dies or a spent time budget loses nothing else."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bench.gpu import run as gpu_run
from bench.gpu.common import Context, ResultsLog, markdown, run_group
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "DAGNET_BENCH_DEVICE": "cpu", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), "--quick", "--tiny", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return result, out


def test_the_tiny_quick_run_on_the_cpu_measures_every_group(tiny_run):
    result, out = tiny_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    groups = data["groups"]
    assert data["meta"]["device"] == "cpu" and data["meta"]["mode"] == "tiny"
    assert list(groups) == ["tests", "ceilings", "chain", "chain_triton", "dense", "train", "models",
                            "models_compiled"]
    assert {name: g["status"] for name, g in groups.items()} == dict.fromkeys(groups, "ok"), groups

    tests = groups["tests"]["rows"][0]        # every CUDA test collected, and skipped: the run is on the CPU
    assert tests["skipped"] > 100 and tests["passed"] == tests["failed"] == tests["error"] == 0

    assert [r["what"] for r in groups["ceilings"]["rows"]] == ["device-to-device copy", "float32 matmul"]
    chain = groups["chain"]["rows"]
    assert {r["implementation"] for r in chain} >= {"dagnet", "dagnet linear", "dagnet parallel", "pytorch-crf"}
    assert {r["op"] for r in chain} == {"nll fwd+bwd", "decode"}
    assert all(r["ms"] > 0 for r in chain)
    assert all(r["agreement"] == "100.00% tags" for r in chain if r["op"] == "decode")
    assert all(float(r["agreement"].split()[-1]) < 1e-4 for r in chain if r["op"] != "decode")

    dense = {r["pass"]: r for r in groups["dense"]["rows"]}
    assert dense["fwd"]["ms per image"] > 0 and dense["fwd+bwd"]["ms per batch"] > 0
    assert dense["agreement with the CPU lattice"]["same label"] == "100.000%"

    assert groups["train"]["rows"][0]["ratio"] > 0
    assert [r["model"] for r in groups["models"]["rows"]] == ["resnet50", "vit_b_16", "bert_base"]
    assert all(r["output rel err"] < 1e-5 for r in groups["models"]["rows"])
    assert [r["mode"] for r in groups["models_compiled"]["rows"]] == ["torch.compile"]

    table = (out / "results.md").read_text()
    assert "### Chain CRF vs pytorch-crf and torch-struct" in table and "| 4, 12, 3 | decode | dagnet |" in table
    assert (out / "pytest.log").exists() and "results in" in (out / "run.log").read_text()


def test_a_failing_group_is_recorded_and_the_next_still_runs(tmp_path):
    log = ResultsLog(tmp_path / "r.json", {"mode": "tiny"})
    ctx = Context(torch.device("cpu"), "tiny", time.time() + 60, log)

    def fails(ctx):
        ctx.row(step=1)                      # written before the failure, and kept
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    assert run_group(ctx, "bad", "A group that fails", fails) == "failed"
    assert run_group(ctx, "good", "A group that works", lambda c: c.row(ms=1.5)) == "ok"
    groups = json.loads((tmp_path / "r.json").read_text())["groups"]
    assert groups["bad"]["status"] == "failed" and groups["bad"]["rows"] == [{"step": 1}]
    assert "illegal memory access" in groups["bad"]["error"]
    assert groups["good"]["status"] == "ok" and groups["good"]["rows"] == [{"ms": 1.5}]
    text = markdown({"meta": {"mode": "tiny"}, "groups": groups})
    assert "### A group that fails (failed)" in text and "illegal memory access" in text


def test_a_group_past_the_deadline_is_skipped(tmp_path):
    log = ResultsLog(tmp_path / "r.json", {})
    ctx = Context(torch.device("cpu"), "tiny", time.time() + 1, log)
    assert run_group(ctx, "late", "Too late", lambda c: c.row(x=1), needs=30) == "skipped"
    assert json.loads((tmp_path / "r.json").read_text())["groups"]["late"]["rows"] == []


def test_a_spent_budget_skips_the_benchmarks_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGNET_BENCH_DEVICE", "cpu")
    assert gpu_run.main([str(tmp_path), "--tiny", "--budget", "1", "--skip", "tests"]) == 0
    groups = json.loads((tmp_path / "results.json").read_text())["groups"]
    assert "tests" not in groups
    assert {g["status"] for g in groups.values()} == {"skipped: time budget"}
    assert "skipped: time budget" in (tmp_path / "results.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_child_that_dies_is_recorded_as_crashed(tmp_path, monkeypatch):
    """The child exits before writing anything (it is asked for a CUDA device there is not):
    the group is marked crashed, with no rows, and the parent goes on."""
    monkeypatch.setenv("DAGNET_BENCH_DEVICE", "cuda")
    entries = gpu_run._child(["chain", "dense"], "tiny", 60, tmp_path / "c.json")
    assert {e["status"] for e in entries.values()} == {"crashed (exit 1)"}
    assert entries["chain"]["rows"] == [] and entries["chain"]["title"].startswith("Chain CRF")


def test_the_report_fills_the_gpu_section_and_keeps_the_rest(tiny_run, tmp_path):
    from bench.gpu import report
    _, out = tiny_run
    data = json.loads((out / "results.json").read_text())
    assert report.main([str(out / "results.json"), "--docs", str(tmp_path / "b.md")]) == 1  # CPU numbers: refused
    data["meta"].update(device="cuda", name="NVIDIA H200", memory_gib=139.8, capability="9.0")
    (tmp_path / "r.json").write_text(json.dumps(data))
    docs = tmp_path / "benchmarks.md"
    docs.write_text((ROOT / "docs" / "benchmarks.md").read_text())
    assert "No GPU numbers exist yet" in docs.read_text()
    before = docs.read_text().split(report.BEGIN)[0]
    for _ in range(2):                                   # idempotent: the section is replaced, not added
        assert report.main([str(tmp_path / "r.json"), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith(before) and text.count(report.BEGIN) == 1
    assert "No GPU numbers exist yet" not in text and "on NVIDIA H200 (139.8 GiB" in text
    assert "#### Chain CRF vs pytorch-crf and torch-struct" in text and "| 4, 12, 3 | decode | dagnet |" in text
