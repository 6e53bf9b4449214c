"""panning.checks: each kind of argument check accepts what it should and names the argument when it refuses."""
import math

import pytest

from panning import checks


@pytest.mark.parametrize("value", [1, 7, 2**40])
def test_positive_int_accepts(value):
    assert checks.positive_int("epochs", value) == value


@pytest.mark.parametrize("value", [0, -1, 1.0, True, "3", None])
def test_positive_int_refuses_with_the_name(value):
    with pytest.raises(ValueError, match="^epochs: expected a positive int"):
        checks.positive_int("epochs", value)


def test_a_refused_value_carries_the_name_of_its_argument():
    """A caller (the command line) names its own spelling of the argument from `field`, not from the message."""
    with pytest.raises(checks.ConfigError) as refused:
        checks.positive_int("per_class", 0)
    assert isinstance(refused.value, ValueError)
    assert (refused.value.field, refused.value.reason) == ("per_class", "expected a positive int, got 0")


def test_positive_ints_checks_each_in_order_naming_the_first_refused():
    assert checks.positive_ints(lanes=2, iterations=5) == (2, 5)
    with pytest.raises(ValueError, match="^iterations: expected a positive int, got 0"):
        checks.positive_ints(lanes=2, iterations=0, batches=-1)


def test_non_negative_int():
    assert checks.non_negative_int("n", 0) == 0
    with pytest.raises(ValueError, match="^n: expected a non-negative int"):
        checks.non_negative_int("n", -1)


def test_integer_minimum_and_type():
    assert checks.integer("seed", -3) == -3
    with pytest.raises(ValueError, match="^seed: expected an int, got False"):
        checks.integer("seed", False)
    with pytest.raises(ValueError, match=r"^k: expected an int >= 2"):
        checks.integer("k", 1, minimum=2)


@pytest.mark.parametrize("value, ok", [(0.0, True), (0.5, True), (0.999, True), (1, False), (1.0, False),
                                       (-0.1, False), (math.nan, False), (math.inf, False), (True, False)])
def test_sparsity_is_a_fraction_below_one(value, ok):
    if ok:
        assert checks.sparsity("sparsity", value) == float(value)
    else:
        with pytest.raises(ValueError, match="^sparsity: expected a number in \\[0, 1\\)"):
            checks.sparsity("sparsity", value)


def test_positive_and_non_negative_numbers():
    assert checks.positive("lr", 0.1) == 0.1
    assert checks.non_negative("weight_decay", 0) == 0.0
    for bad in (0, -1e-9, math.inf, math.nan, "0.1"):
        with pytest.raises(ValueError, match="^lr: expected"):
            checks.positive("lr", bad)
    with pytest.raises(ValueError, match="^weight_decay: expected a number in \\[0, inf\\]"):
        checks.non_negative("weight_decay", -1)


def test_number_open_bounds():
    assert checks.number("a", -1.0, low=-1.0, high=1.0) == -1.0
    with pytest.raises(ValueError, match=r"^a: expected a number in \(-1, 1\]"):
        checks.number("a", -1.0, low=-1.0, high=1.0, low_open=True)


def test_choice():
    assert checks.choice("method", "snip", ("snip", "grasp")) == "snip"
    with pytest.raises(ValueError, match="^method: expected one of snip, grasp, got 'x'"):
        checks.choice("method", "x", ("snip", "grasp"))


def test_instance():
    assert checks.instance("scores", True, bool, "a bool") is True
    assert checks.instance("n", 3, (int, float), "a number") == 3
    with pytest.raises(TypeError, match="^state_dict: expected a mapping, got list$"):
        checks.instance("state_dict", [], dict, "a mapping")


def test_momentum():
    assert checks.momentum("momentum", 0) == 0 and checks.momentum("momentum", 0.9) == 0.9
    for bad in (1.0, -0.1, float("nan"), "0.9"):
        with pytest.raises(ValueError, match="momentum: expected"):
            checks.momentum("momentum", bad)
