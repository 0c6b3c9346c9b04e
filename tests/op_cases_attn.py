"""Shape cases of the attention, tensor-algebra, learned and position ops (see tests/test_ops.py)."""

BOOL_S = {"shape": ["F"], "dtype": "bool"}
BOOL_T = {"shape": ["T"], "dtype": "bool"}
BOOL_TS = {"shape": ["T", "F"], "dtype": "bool"}
TOKENS = {"shape": ["T"], "dtype": "int64"}

CASES = {
    "multihead_attention": [([["T", 8], ["T", 8], ["T", 8]], {"num_heads": 2}),
                            ([["T", 8], ["F", 6], ["F", 5]], {"num_heads": 4, "bias": False}),
                            ([["T", 8], ["F", 8], ["F", 8], BOOL_S], {"num_heads": 8}),
                            ([["T", 8], ["F", 8], ["F", 8], BOOL_S, BOOL_TS], {"num_heads": 2})],
    "scaled_dot_product_attention": [([["T", 8], ["F", 8], ["F", 6]], {}),
                                     ([[2, "T", 4], [2, "T", 4], [2, "T", 4]], {"is_causal": True, "scale": 0.5}),
                                     ([[2, "T", 4], [2, "F", 4], [2, "F", 3], BOOL_TS], {})],
    "matmul": [([["T", 4], [4, 5]], {}), ([[4], [4]], {}), ([[3, "T", 4], [4, "F"]], {}),
               ([[4], [2, 4, 3]], {}), ([["T", 4], [4]], {}), ([["T", 4], [3, 4, "T"]], {})],
    "einsum": [([["T", 4], ["F", 4]], {"equation": "td,sd->ts"}), ([[3, 4]], {"equation": "ij->ji"}),
               ([[4, 4]], {"equation": "ii->i"}), ([["T", 4], [4, 5], [5]], {"equation": "td, de, e -> t"}),
               ([[3, 4], [4, "T"]], {"equation": "ij,jk"})],
    "transpose": [([[3, "H", "W"]], {"dim0": 1, "dim1": -1}), ([["T", 4]], {"dim0": 2, "dim1": 1})],
    "mean": [([[3, "H", "W"]], {"dim": [2, 3]}), ([["T", 4]], {"dim": 1, "keepdim": True}), ([[3, "H"]], {})],
    "sum": [([["T", 4]], {"dim": -1}), ([[3, "H", "W"]], {"keepdim": True})],
    "amax": [([[3, "H", "W"]], {"dim": [-1, 2]}), ([["T", 5]], {"dim": 1})],
    "masked_mean": [([["T", 4], BOOL_T], {}), ([["T", 3, 2], BOOL_T], {})],
    "select": [([["T", 4]], {"dim": 1, "index": 0}), ([[3, "H", "W"]], {"dim": 1, "index": -1})],
    "narrow": [([["T", 6]], {"dim": 2, "start": 1, "length": 3}), ([["T", 6]], {"dim": 1, "start": 0, "length": 2})],
    "scale": [([[3, "H"]], {"factor": 0.5})],
    "add_scalar": [([[3]], {"value": 1.0})],
    "parameter": [([[3, "H"]], {"shape": [1, 8]}), ([["T", 4]], {"shape": [5], "init": "trunc_normal"}),
                  ([[6, "H", "W"]], {"shape": [6, 1, 1], "init": "constant", "value": 1e-6})],
    "layer_scale": [([["T", 8]], {}), ([[6, "H", "W"]], {"dim": 1, "init_values": 1e-6})],
    "positions": [([["T", 4]], {}), ([TOKENS], {})],
    "sinusoidal_positions": [([["T", 4]], {"d_model": 6}), ([TOKENS], {"d_model": 5})],
}
