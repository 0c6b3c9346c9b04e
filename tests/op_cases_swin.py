"""Shape cases of Swin's window attention and patch merging (see tests/test_ops.py)."""

CASES = {
    "shifted_window_attention": [([["H", "W", 12]], {"window_size": 4, "shift_size": 2, "num_heads": 3}),
                                 ([["H", "W", 8]], {"window_size": [3, 5], "shift_size": [1, 2], "num_heads": 2,
                                                    "qkv_bias": False, "proj_bias": False}),
                                 ([["H", "W", 6]], {"window_size": 7, "shift_size": 0, "num_heads": 1}),
                                 ([[5, 3, 4]], {"window_size": 7, "shift_size": 3, "num_heads": 4})],
    "patch_merging": [([["H", "W", 6]], {}), ([[5, 7, 4]], {"eps": 1e-6}), ([["H", 4, 3]], {})],
}
