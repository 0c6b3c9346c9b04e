"""Run directories that cannot be lost, and training or evaluation input that never gives a traceback.

Issue 15: a refused `train` writes nothing; `--resume` refuses another spec or
`--set`; an unreadable checkpoint falls back to the other one or is one line;
metrics.jsonl never repeats an epoch; every label is range-checked; Ctrl-C, a
full disk and a missing optional package are one line each.
"""

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import dagnet
import dagnet.train.checkpoint as checkpoint_module
from dagnet.cli import main
from dagnet.data import ArrayDataset, DataError, ImageFolder, check_labels, digits, load_arrays, split_dataset
from dagnet.train import CheckpointError, load_checkpoint
from dagnet.train.run import RunDir
from tests.conftest import ROOT, SPECS

SPEC = str(SPECS / "digits_cnn.yaml")
FAST = ["--set", "width=8", "-o", "batch_size=128", "-o", "schedule.name=none"]


class Payload:
    """Unpickling this would create a file: proof that nothing in a refused file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _snapshot(run) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch run of the digits spec (never modified: tests copy it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", SPEC, "--epochs", "2", "--out", str(run), *FAST]) == 0
    return run


def _copy(run, to):
    to.mkdir()
    for name, data in _snapshot(run).items():
        (to / name).write_bytes(data)
    return to


# -- a refused run writes nothing; --resume trains only the stored spec ----------

def test_a_refused_train_leaves_the_run_as_it_was(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", str(SPECS / "lenet.yaml"), "--out", str(run), "--epochs", "1"]) == 1
    _one_line_error(capsys, "already holds a run", f"--resume {run}", "--out NEW_DIR")
    assert main(["train", SPEC, "--out", str(run), "--epochs", "1", "--set", "width=16"]) == 1
    _one_line_error(capsys, "already holds a run")
    assert _snapshot(run) == before
    assert main(["eval", str(run)]) == 0


def test_resume_refuses_a_different_spec_or_set(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    edited = tmp_path / "edited.yaml"
    edited.write_text((SPECS / "digits_cnn.yaml").read_text() + "\n# a comment makes it another file\n")
    capsys.readouterr()
    assert main(["train", str(edited), "--resume", str(run), "--epochs", "3"]) == 1
    _one_line_error(capsys, f"{edited} differs from the spec {run} was trained with", "--out NEW_DIR")
    assert main(["train", str(tmp_path / "missing.yaml"), "--resume", str(run), "--epochs", "3"]) == 1
    _one_line_error(capsys, "missing.yaml does not exist")
    assert main(["train", "--resume", str(run), "--epochs", "3", "--set", "width=16"]) == 1
    _one_line_error(capsys, "--set width=16 differs from the run's width=8", "--out NEW_DIR")
    assert main(["train", "--resume", str(run), "--epochs", "3", "--set", "classes=10"]) == 1
    _one_line_error(capsys, "--set classes=10 differs from the run's no --set classes")
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 2     # nothing trained yet

    same = tmp_path / "same.yaml"                  # the same content elsewhere is the same spec
    same.write_bytes((SPECS / "digits_cnn.yaml").read_bytes())
    assert main(["train", str(same), "--resume", str(run), "--epochs", "3", "--set", "width=8"]) == 0
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 3


def test_an_edited_stored_spec_is_refused(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace("width: 32", "width: 64"))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 1
    _one_line_error(capsys, f"{spec} was edited after the run was trained", "--out NEW_DIR")
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 1
    _one_line_error(capsys, "was edited")

    meta = json.loads((trained / "spec.json").read_text())
    (run / "spec.json").write_text(json.dumps({**meta, "spec": "../../etc/passwd"}))
    assert main(["eval", str(run)]) == 1
    _one_line_error(capsys, "spec.json was edited")
    (run / "spec.json").write_text('{"spec": "spec.ya')
    assert main(["eval", str(run)]) == 1
    _one_line_error(capsys, "spec.json is not valid JSON")
    (run / "spec.json").write_text('["spec.yaml"]')
    assert main(["eval", str(run)]) == 1
    _one_line_error(capsys, "spec.json was edited")


def test_an_edited_config_yaml_is_one_line(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    (run / "config.yaml").write_text("epochs: [\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 1
    _one_line_error(capsys, f"{run / 'config.yaml'} is not valid YAML (line 2): was it edited?")


# -- checkpoints that cannot be read --------------------------------------------

def test_unreadable_checkpoints_are_one_line_and_run_nothing(tmp_path):
    marker = tmp_path / "payload-ran"
    cases = {"empty.pt": b"", "truncated.pt": None, "pickle.pt": pickle.dumps({"model": Payload(marker)}),
             "pickle2.pt": pickle.dumps({"model": Payload(marker)}, protocol=2), "text.pt": b"dagnet: 1\n"}
    checkpoint_module.save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(100)}})
    cases["truncated.pt"] = (tmp_path / "good.pt").read_bytes()[:300]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="empty|truncated|not a checkpoint"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_a_truncated_last_checkpoint_falls_back_to_best(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")              # copies: last.pt and best.pt are separate files
    good = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(good[: len(good) // 2])
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "last.pt is truncated or not a checkpoint" in err and "using" in err and "best.pt (epoch 2)" in err
    assert "Traceback" not in err
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 3

    (run / "best.pt").unlink()                          # (it may be a hard link to last.pt)
    (run / "best.pt").write_bytes(b"")                  # eval prefers best.pt, and falls back to last.pt
    assert main(["eval", str(run)]) == 0
    assert "best.pt is empty" in capsys.readouterr().err


def test_a_missing_last_checkpoint_is_said_before_resuming_from_best(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    (run / "last.pt").unlink()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert "last.pt does not exist; using" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="continues that run in place"):
        main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")])
    assert not (tmp_path / "elsewhere").exists()


def test_no_good_checkpoint_left_is_one_line(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    (run / "best.pt").unlink()
    (run / "last.pt").write_bytes(b"")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 1
    _one_line_error(capsys, "last.pt is empty", "no good checkpoint left in", "--out NEW_DIR")
    assert main(["eval", str(run)]) == 1
    _one_line_error(capsys, "best.pt does not exist; ", "last.pt is empty", "no good checkpoint left in")
    pickled = tmp_path / "run" / "evil.pt"
    pickled.write_bytes(pickle.dumps({"model": Payload(tmp_path / "ran")}))
    assert main(["eval", str(pickled)]) == 1
    _one_line_error(capsys, "not a checkpoint", "nothing in it was run")
    assert main(["compile", SPEC, "-o", str(tmp_path / "m.safetensors"), "--weights", str(pickled)]) == 1
    _one_line_error(capsys, "not a checkpoint")
    assert main(["compile", SPEC, "-o", str(tmp_path / "m.safetensors"), "--weights", str(trained / "last.pt")]) == 1
    _one_line_error(capsys, "last.pt does not fit the model", "(8, 1, 3, 3) in the file but (32, 1, 3, 3)")   # trained with width=8
    assert not (tmp_path / "ran").exists()


# -- data files and labels --------------------------------------------------------

def test_data_files_that_are_not_arrays_are_one_line(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    np.savez(tmp_path / "objects.npz", image=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "strings.npz", image=np.array(["a", "b"]))
    np.savez(tmp_path / "scalar.npz", image=np.array(3.0))
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 1, 8, 8)), label=np.zeros(0, int))
    np.savez(tmp_path / "uneven.npz", image=np.zeros((5, 1, 8, 8)), label=np.zeros(4, int))
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive " * 10)
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"image": Payload(marker)}))
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"image": Payload(marker)}))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "strings.npz").read_bytes()[:60])
    expected = {"objects": "arrays of Python objects", "strings": "not an array of numbers", "scalar": "single value",
                "empty": "no examples", "uneven": "different numbers of examples", "junk": "not an .npz archive", "pickle.npz": "not an .npz archive",
                "pickle.pt": "holds Python objects", "truncated": "not an .npz archive"}
    for name, message in expected.items():
        path = tmp_path / (name if "." in name else f"{name}.npz")
        with pytest.raises(DataError, match=message):
            load_arrays(path)
    assert not marker.exists()
    capsys.readouterr()
    assert main(["train", SPEC, "--data", str(tmp_path / "pickle.npz"), "--out", str(tmp_path / "r")]) == 1
    _one_line_error(capsys, "pickle.npz: not an .npz archive")
    assert not (tmp_path / "r").exists()


def test_an_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(DataError, match=r"a\.png: not a readable image"):
        ImageFolder(tmp_path)[0]


def test_labels_are_checked_on_every_sample(tmp_path, capsys):
    full = digits()
    labels = full.columns["label"].clone()
    labels[[1500, 1700]] = 12
    data = tmp_path / "digits.npz"
    np.savez(data, image=full.columns["image"].numpy(), label=labels.numpy())
    capsys.readouterr()
    assert main(["train", SPEC, "--data", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *FAST]) == 1
    _one_line_error(capsys, "sample 1500: 'label' holds labels [12] outside 0..9 or -100 (and 1 more sample)")
    assert not (tmp_path / "r").exists()


def test_check_labels_sees_through_subsets_and_ragged_columns():
    ragged = ArrayDataset({"labels": [torch.tensor([0, 1]), torch.tensor([1, -100, 2]), torch.tensor([3, 0])]})
    check_labels(ragged, "labels", (0, 3), ignore_index=-100)
    with pytest.raises(DataError, match=r"sample 2: 'labels' holds labels \[3\] outside 0..2 or -100"):
        check_labels(ragged, "labels", (0, 2), ignore_index=-100)
    column = ArrayDataset({"label": torch.arange(10)})
    train, val = split_dataset(column, 0.2, seed=0)
    held_out = sorted(val.indices)
    with pytest.raises(DataError, match=rf"sample {held_out[-1]}:"):
        check_labels(val, "label", (0, held_out[0]))
    check_labels(val, "label", (held_out[0], held_out[-1]))


# -- metrics.jsonl ----------------------------------------------------------------

def test_a_run_killed_in_its_first_save_logs_epoch_1_once(tmp_path):
    """SIGKILL while the first checkpoint is written: nothing to resume, and training again
    must not append a second epoch 1 to the log of the attempt. The checkpoint's write is
    held at its fsync, so that the kill lands inside it every time."""
    run = tmp_path / "run"
    command = [SPEC, "--epochs", "3", "--out", str(run), *FAST]
    code = ("import os, time; real_fsync = os.fsync; "
            "os.fsync = lambda fd: time.sleep(600) if '.last.pt.' in os.readlink(f'/proc/self/fd/{fd}') "
            "else real_fsync(fd); "
            f"from dagnet.cli import main; main(['train', *{command!r}])")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline and not any(run.glob(".last.pt.*.tmp")):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (run / "last.pt").exists()
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert main(["train", "--resume", str(run)]) == 1            # nothing saved: say so, in one line
    assert main(["train", SPEC, "--epochs", "2", "--out", str(run), *FAST]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_history_keeps_one_record_per_epoch_and_drops_a_cut_line(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text('{"epoch": 1, "x": 1}\n{"epoch": 2, "x": 2}\n{"epoch": 2, "x": 3}\n'
                           '{"epoch": 3, "x": 4}\n{"epoch": 4, "x"')
    assert [r["x"] for r in run.history(3)] == [1, 3, 4]
    assert [json.loads(line)["x"] for line in run.metrics.read_text().splitlines()] == [1, 3, 4]


# -- Ctrl-C, full disks, missing packages ----------------------------------------------

def test_ctrl_c_prints_one_line_after_saving(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "dagnet", "train", SPEC, "--epochs", "200", "--out", str(run), *FAST]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/200"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == f"dagnet train: interrupted; the run is saved: resume it with `dagnet train --resume {run}`"
    assert "interrupted in epoch" in out
    epoch = load_checkpoint(run / "last.pt")["progress"]["epoch"]
    assert main(["train", "--resume", str(run), "--epochs", str(epoch + 1)]) == 0


def test_a_full_disk_is_one_line_and_keeps_the_saved_run(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path / "run")

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint_module, "write_atomic", disk_full)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 1
    _one_line_error(capsys, f"{run / 'last.pt'}: No space left on device; training stopped",
                    f"{run / 'last.pt'} is intact")
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 2
    assert load_checkpoint(run / "best.pt")["progress"]["epoch"] == 2
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_a_read_only_run_directory_is_one_line(tmp_path, monkeypatch, capsys):
    import dagnet.train.run as run_module

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_module, "write_atomic", read_only)
    capsys.readouterr()
    assert main(["train", SPEC, "--out", str(tmp_path / "run"), "--epochs", "1", *FAST]) == 1
    _one_line_error(capsys, "dagnet train: error: ", "spec.yaml: Read-only file system")


@pytest.mark.parametrize("module, command, extra", [
    ("sklearn", ["train", SPEC, "--epochs", "1"], "pip install 'dagnet[train]'"),
    ("safetensors", ["compile", SPEC, "-o", "model.safetensors"], "pip install 'dagnet[train]'"),
    ("onnxscript", ["compile", SPEC, "-o", "model.onnx"], "pip install 'dagnet[export]'"),
])
def test_a_missing_optional_package_names_the_extra(tmp_path, module, command, extra):
    command = [c if c != "model.safetensors" and c != "model.onnx" else str(tmp_path / c) for c in command]
    if command[0] == "train":
        command += ["--out", str(tmp_path / "run"), *FAST]
    code = (f"import sys; sys.modules[{module!r}] = None; "
            f"from dagnet.cli import main; sys.exit(main({command!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and extra in proc.stderr, proc.stderr


def test_training_without_matplotlib_saves_the_run_and_says_why_there_are_no_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["train", SPEC, "--epochs", "1", "--out", str(tmp_path / "run"), *FAST]) == 0
    assert "matplotlib is not installed, so no loss.png" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "loss.png").exists()


IMPORTING = sorted(p for p in SPECS.glob("*") if p.suffix in (".yaml", ".dag")
                   and dagnet.parse(p).imports and dagnet.parse(p).nodes)


@pytest.mark.parametrize("path", IMPORTING, ids=[p.name for p in IMPORTING])
def test_a_run_keeps_a_spec_with_imports_as_one_self_contained_file(path, tmp_path):
    """A copy that still imported `blocks/...` could never be evaluated or resumed from the run."""
    from dagnet.train.run import spec_snapshot
    from tests.test_dsl_roundtrip import signature
    copy = tmp_path / ("spec" + path.suffix)
    copy.write_bytes(spec_snapshot(path))
    assert not dagnet.parse(copy).imports
    assert signature(dagnet.load(copy)) == signature(dagnet.load(path))


def test_a_run_of_a_spec_with_imports_evaluates_and_resumes_from_its_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "b.yaml").write_text(
        "dagnet: 1\nblocks:\n  unit:\n    params: {w: 16}\n    nodes:\n"
        "      fc: {op: linear, in: x, out_features: w}\n      act: {op: relu, in: fc}\n    outputs: [act]\n")
    (tmp_path / "m.yaml").write_text(
        "dagnet: 1\nimports: [blocks/b.yaml]\ninputs:\n  image: {shape: [1, 8, 8]}\nnodes:\n"
        "  flat: {op: flatten, in: image}\n  h: {block: unit, in: flat}\n"
        "  logits: {op: linear, in: h, out_features: 10}\noutputs: [logits]\n"
        "loss: {op: cross_entropy, output: logits, target: label}\ntrain: {data: {name: digits}, epochs: 1}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "m.yaml", "--out", "run"]) == 0
    monkeypatch.chdir(tmp_path / "run")         # nowhere near blocks/
    assert main(["eval", "."]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train", "m.yaml", "--resume", "run", "--epochs", "2"]) == 0
    assert "differs" not in capsys.readouterr().err


def test_a_config_file_is_read_as_a_spec_is(tmp_path, capsys):
    """--config FILE: bad YAML, bad bytes and alias bombs are located one-line errors, not tracebacks."""
    bad = {"broken.yaml": b"epochs: [1\n", "latin1.yaml": "lr: 0.1 # caf\xe9\n".encode("latin-1"),
           "bomb.yaml": ("a0: &a0 [1, 1]\n" + "".join(f"a{i}: &a{i} [*a{i-1}, *a{i-1}]\n" for i in range(1, 30))
                         + "epochs: 1\n").encode()}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        assert main(["train", SPEC, "--config", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{tmp_path / name}:") and ": error: " in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_flag_that_is_not_a_yaml_value_is_one_line(tmp_path, capsys):
    assert main(["train", SPEC, "-o", "lr=[1", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == "dagnet train: error: lr: `[1` is not a YAML value (quote it, or close its brackets)\n"
