import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

# Tests use small models, for which one thread is fastest, and a second thread only
# spins when other work shares the cores.
torch.set_num_threads(1)


def import_file(path: Path, name: str = "generated"):
    """Import a Python file (a standalone model written by dagnet) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def spec_file(tmp_path):
    """Write spec text to a file and return its path."""
    def write(text: str, name: str = "model.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
