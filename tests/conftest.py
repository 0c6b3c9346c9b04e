from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

# Tests use small models, for which one thread is fastest, and a second thread only
# spins when other work shares the cores.
torch.set_num_threads(1)


@pytest.fixture
def spec_file(tmp_path):
    """Write spec text to a file and return its path."""
    def write(text: str, name: str = "model.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
