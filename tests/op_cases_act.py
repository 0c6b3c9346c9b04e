"""Shape cases for the activations and the normalisation and regularisation ops of issue
"The op library of 2026" (merged into tests/test_ops.py's CASES)."""

CASES = {
    "relu6": [([[3, "H"]], {})],
    "silu": [([[3, "H", "W"]], {})],
    "hardswish": [([[3, "H"]], {})],
    "hardsigmoid": [([["T", 4]], {})],
    "elu": [([[3, "H"]], {"alpha": 0.5})],
    "selu": [([[5]], {})],
    "prelu": [([[3, "H", "W"]], {}), ([[3, "H", "W"]], {"num_parameters": 3, "init": 0.1}),
              ([[4, "T"]], {"num_parameters": 4})],
    "mish": [([[3, "H", "W"]], {})],
    "softplus": [([[3, "H"]], {"beta": 2.0, "threshold": 10.0})],
    "instance_norm": [([[3, "T"]], {}), ([[3, "H", "W"]], {"affine": True}),
                      ([[2, "D", "H", "W"]], {"track_running_stats": True, "momentum": 0.2})],
    "local_response_norm": [([[6, "H", "W"]], {"size": 3}), ([[5, "T"]], {"size": 2, "alpha": 0.1, "k": 2.0})],
    "stochastic_depth": [([[3, "H", "W"]], {"p": 0.2, "mode": "row"}), ([[5]], {"p": 0.5, "mode": "batch"})],
    "dropout1d": [([[3, "T"]], {"p": 0.1})],
    "dropout3d": [([[2, "D", "H", "W"]], {})],
}
