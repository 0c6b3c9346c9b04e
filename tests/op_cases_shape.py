"""Shape cases of the ops with several outputs (tests/test_ops.py checks output 0 against PyTorch)."""

CASES = {
    "chunk": [([[6, "H"]], {"chunks": 4, "dim": 1}), ([[3, 5, "W"]], {"chunks": 2, "dim": -2})],
    "split": [([[7, "H"]], {"split_size_or_sections": 3, "dim": 1}),
              ([["T", 6]], {"split_size_or_sections": [1, 5], "dim": 2})],
}
