"""Every example in docs/errors.md still produces exactly the message documented."""

import re
from pathlib import Path

import pytest

from dagnet.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
SECTIONS = re.findall(r"## (.+?)\n\n```yaml\n(.*?)\n```\n\n```text\n(.*?)\n```", DOC.read_text(), re.S)


def test_the_doc_has_examples():
    assert len(SECTIONS) >= 20


@pytest.mark.parametrize("title, spec, message", SECTIONS, ids=[s[0] for s in SECTIONS])
def test_documented_message(tmp_path, monkeypatch, capsys, title, spec, message):
    (tmp_path / "model.yaml").write_text(spec + "\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "model.yaml"]) == 1
    assert capsys.readouterr().err.rstrip("\n") == message
