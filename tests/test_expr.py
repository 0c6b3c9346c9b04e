import pytest

from dagnet.expr import ExprError, evaluate, names_in


@pytest.mark.parametrize("text, value", [
    ("channels * 4", 256), ("channels // 3", 21), ("2 if i == 0 else 1", 2),
    ("max(channels, 100) - 1", 99), ("-channels + 1", -63), ("channels ** 2", 4096),
    ("i == 0 and channels > 10", True), ("not true", False), ("ceil(channels / 10)", 7),
])
def test_arithmetic(text, value):
    assert evaluate(text, {"channels": 64, "i": 0}) == value


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hacked')", "channels.__class__", "(lambda: 1)()",
    "[x for x in ()]", "open('/etc/passwd')", "channels[0]", "print(1)",
])
def test_rejects_code(text):
    with pytest.raises(ExprError):
        evaluate(text, {"channels": 64})


def test_bounds_stop_runaway_arithmetic():
    with pytest.raises(ExprError, match="exponent"):
        evaluate("9 ** 9 ** 9", {})
    with pytest.raises(ExprError, match="limit"):
        evaluate("10 ** 20", {})
    with pytest.raises(ExprError):
        evaluate("1 / 0", {})


def test_unknown_name_is_reported():
    with pytest.raises(ExprError) as info:
        evaluate("chanels * 4", {"channels": 1})
    assert info.value.unknown == "chanels"
    assert names_in("a * b + max(c, 1)") == {"a", "b", "c"}
