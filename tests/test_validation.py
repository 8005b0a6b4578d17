"""moprune.validation: one rule per kind of argument, one message format, one error for conflicts."""

import numpy as np
import pytest

from moprune.exceptions import ConflictingArgumentsError, MopruneError, MopruneValueError
from moprune.validation import (
    check_bool,
    check_callable,
    check_choice,
    check_dict,
    check_int,
    check_pop_size,
    check_probability,
    check_real,
    check_seed,
    conflict,
)


@pytest.mark.parametrize("kwargs, value, expected", [
    ({}, 3, 3),
    ({"low": 1}, np.int64(4), 4),
    ({"low": 0, "high": 9}, 9, 9),
    ({"allow_none": True}, None, None),
])
def test_check_int_accepts_and_normalises(kwargs, value, expected):
    out = check_int("n", value, **kwargs)
    assert out == expected and (out is None or type(out) is int)


@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 1}, 0, "n must be an int >= 1; got 0"),
    ({"low": 1}, 2.0, "n must be an int >= 1; got 2.0"),
    ({"low": 1}, True, "n must be an int >= 1; got True"),
    ({"high": 5}, 6, "n must be an int <= 5; got 6"),
    ({"low": 0, "high": 9}, 10, "n must be an int in [0, 9]; got 10"),
    ({"low": 1, "allow_none": True}, "3", "n must be None or an int >= 1; got '3'"),
    ({}, None, "n must be an int; got None"),
])
def test_check_int_refuses_naming_argument_rule_and_value(kwargs, value, message):
    with pytest.raises(MopruneValueError) as info:
        check_int("n", value, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 0, "low_open": True}, 0, "x must be a finite real number > 0; got 0"),
    ({"low": 0}, float("inf"), "x must be a finite real number >= 0; got inf"),
    ({"high": 1, "high_open": True}, 1.0, "x must be a finite real number < 1; got 1.0"),
    ({"low": 0, "high": 100, "unit": "accuracy points"}, 101, "x must be a real number in [0, 100] (accuracy points); got 101"),
    ({"low": 0, "high": 1, "low_open": True}, 0.0, "x must be a real number in (0, 1]; got 0.0"),
    ({}, False, "x must be a finite real number; got False"),
    ({}, float("nan"), "x must be a finite real number; got nan"),
    ({"allow_none": True}, "1", "x must be None or a finite real number; got '1'"),
])
def test_check_real_refuses(kwargs, value, message):
    with pytest.raises(MopruneValueError) as info:
        check_real("x", value, **kwargs)
    assert str(info.value) == message


def test_check_real_accepts_ints_and_numpy_and_returns_float():
    assert check_real("x", 2, low=0) == 2.0 and type(check_real("x", 2, low=0)) is float
    assert check_real("x", np.float32(0.5), low=0, high=1) == 0.5
    assert check_real("x", None, allow_none=True) is None


def test_probability_seed_and_pop_size_rules():
    assert check_probability("p", 0) == 0.0 and check_probability("p", 1) == 1.0
    with pytest.raises(MopruneValueError, match=r"^p must be a probability in \(0, 1\]; got 0$"):
        check_probability("p", 0, allow_zero=False)
    with pytest.raises(MopruneValueError, match=r"^p must be None or a probability in \[0, 1\]; got 1.5$"):
        check_probability("p", 1.5, allow_none=True)
    assert check_seed(np.int32(7)) == 7
    for bad in (-1, 1.0, True, None):
        with pytest.raises(MopruneValueError, match=r"^seed must be an int >= 0; got "):
            check_seed(bad)
    assert check_pop_size(1) == 1
    with pytest.raises(MopruneValueError, match=r"^pop_size must be an int >= 2; got 1$"):
        check_pop_size(1, minimum=2)


def test_bool_choice_callable_dict():
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(MopruneValueError, match=r"^flag must be True or False; got 1$"):
        check_bool("flag", 1)
    assert check_choice("mode", "auto", ("auto", True, False)) == "auto"
    assert check_choice("mode", False, ("auto", True, False)) is False
    with pytest.raises(MopruneValueError, match=r"^mode must be one of \['auto', True, False\]; got 1$"):
        check_choice("mode", 1, ("auto", True, False))  # 1 == True, but it is not a flag
    assert check_callable("cb", None, "(algorithm)") is None
    with pytest.raises(MopruneValueError, match=r"^cb must be None or a callable \(algorithm\); got 3$"):
        check_callable("cb", 3, "(algorithm)")
    options = {"a": 1}
    assert check_dict("opts", None) == {} and check_dict("opts", options) == options
    assert check_dict("opts", options) is not options
    with pytest.raises(MopruneValueError, match=r"^opts must be None or a dict; got \[1\]$"):
        check_dict("opts", [1])


def test_conflicts_are_one_error_type_that_is_a_value_and_a_type_error():
    error = conflict(("n_gen", "n_evals"), "exactly one of them set", (2, 10))
    assert isinstance(error, ConflictingArgumentsError)
    assert isinstance(error, MopruneValueError) and isinstance(error, TypeError) and isinstance(error, MopruneError)
    assert str(error) == "n_gen, n_evals must be exactly one of them set; got (2, 10)"


def test_every_seed_follows_the_same_rule():
    """search, the Evaluator and retrain all refuse a negative seed with the same message."""
    import torch
    from torch.utils.data import TensorDataset

    from conftest_search import make_data, tiny_problem
    from moprune.evaluation import Evaluator
    from moprune.searching import search

    messages = []
    with pytest.raises(MopruneValueError) as info:
        search(tiny_problem(), "random", pop_size=2, n_evals=2, seed=-1)
    messages.append(str(info.value))
    with pytest.raises(MopruneValueError) as info:
        Evaluator(make_data(20, seed=0), seed=-1)
    messages.append(str(info.value))
    from moprune.data import Splits
    from moprune.retraining import retrain

    data = TensorDataset(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(MopruneValueError) as info:
        retrain(torch.nn.Linear(10, 4), data=Splits(data, data, data), seed=-1)
    messages.append(str(info.value))
    assert messages == ["seed must be an int >= 0; got -1"] * 3


def test_conflicting_arguments_raise_the_conflict_error_everywhere(tmp_path):
    from conftest_search import tiny_problem
    from moprune.algorithms import ALGORITHMS
    from moprune.runs import prepare_run
    from moprune.scoring import WeightedScore, make_scoring
    from moprune.searching import search

    problem = tiny_problem()
    cases = [
        lambda: search(problem, "random", n_gen=1, n_evals=4),
        lambda: ALGORITHMS.get("threshold_ga")(problem, pop_size=4, threshold=2.0, scoring="weighted"),
        lambda: ALGORITHMS.get("random")(problem, pop_size=4, scoring_options={"w_acc": 1.0}),
        lambda: make_scoring(WeightedScore(), w_acc=2.0),
        lambda: ALGORITHMS.get("two_step")(problem, pop_size=4, n_rounds=2, sampling="random"),
        lambda: prepare_run(tmp_path / "run", {"model": "tiny"}, resume=True, force=True),
    ]
    for case in cases:
        with pytest.raises(ConflictingArgumentsError):
            case()
