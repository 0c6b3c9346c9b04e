import json
from pathlib import Path

from dagnet.docs import BEGIN, END, op_table

ROOT = Path(__file__).resolve().parents[1]


def test_op_table_in_spec_doc_is_current():
    text = (ROOT / "docs" / "spec.md").read_text()
    table = text.split(BEGIN)[1].split(END)[0].strip()
    assert table == op_table(), "run `python -m dagnet.docs` to regenerate docs/spec.md"


def test_json_schema_accepts_the_example_specs():
    import yaml
    jsonschema = __import__("pytest").importorskip("jsonschema")
    schema = json.loads((ROOT / "dagnet" / "spec" / "schema.json").read_text())
    for path in (ROOT / "specs").glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = {"dagnet": 1, "inputs": {}, "nodes": {}, "outputs": [], "ouputs": []}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
