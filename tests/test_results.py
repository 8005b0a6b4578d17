"""moprune.results on hand-made archives: frames, fronts, picks, hypervolume, comparisons."""

import warnings

import numpy as np
import pandas as pd
import pytest

from moprune import results as R
from moprune.archive import Evaluation, SearchResult
from moprune.exceptions import MopruneValueError


def make_eval(accuracy, macs_ratio, *, generation=0, key=None, feasible=True, error=None, cached=False,
              genome=None, sparsity=None):
    """An Evaluation whose only interesting numbers are accuracy and MACs ratio."""
    if genome is None:
        genome = np.array([accuracy, macs_ratio])
    return Evaluation(
        genome=np.asarray(genome),
        plan_key=key or f"a{accuracy}-m{macs_ratio}",
        summary={"kept/conv1": int(round(32 * macs_ratio)), "kept/conv2": int(round(64 * macs_ratio))},
        objectives=(1 - accuracy, macs_ratio),
        accuracy=accuracy,
        macs=macs_ratio * 1000.0,
        params=macs_ratio * 100.0,
        macs_ratio=macs_ratio,
        params_ratio=macs_ratio,
        sparsity=1 - macs_ratio if sparsity is None else sparsity,
        feasible=feasible,
        generation=generation,
        cached=cached,
        seconds=0.0 if cached else 0.5,
        error=error,
    )


def make_result(points, *, objectives=("error", "macs"), algorithm="nsga2", seed=0, base_accuracy=0.99,
                max_accuracy_drop=None):
    archive = [p if isinstance(p, Evaluation) else make_eval(*p) for p in points]
    return SearchResult(archive=archive, objectives=objectives, algorithm=algorithm, seed=seed,
                        base_accuracy=base_accuracy, base_macs=1000.0, base_params=100.0,
                        max_accuracy_drop=max_accuracy_drop)


# (accuracy, macs_ratio); the front is evals 0..4, evals 5 and 6 are dominated by eval 2.
POINTS = [(0.99, 1.0), (0.98, 0.6), (0.97, 0.3), (0.90, 0.2), (0.50, 0.1), (0.96, 0.5), (0.95, 0.35)]


@pytest.fixture
def result():
    return make_result(POINTS)


# --------------------------------------------------------------------------------- to_frame

def test_to_frame_columns_values_and_attrs(result):
    df = R.to_frame(result)
    assert len(df) == 7 and df.index.name == "eval" and list(df.index) == list(range(7))
    for column in ("generation", "accuracy", "error", "accuracy_drop", "macs", "macs_ratio", "params",
                   "params_ratio", "sparsity", "feasible", "objective_error", "objective_macs",
                   "kept/conv1", "kept/conv2", "plan_key", "genome_hash", "cached", "seconds",
                   "algorithm", "seed", "error_message", "genome"):
        assert column in df.columns, column
    row = df.loc[3]
    assert row["accuracy"] == 0.90
    assert row["error"] == pytest.approx(0.10)
    assert row["accuracy_drop"] == pytest.approx(9.0)
    assert row["macs"] == pytest.approx(200.0) and row["macs_ratio"] == 0.2
    assert row["objective_error"] == pytest.approx(0.10) and row["objective_macs"] == 0.2
    assert row["kept/conv1"] == 6 and row["kept/conv2"] == 13
    assert row["algorithm"] == "nsga2" and row["seed"] == 0 and row["error_message"] is None
    assert df.attrs["base_accuracy"] == 0.99 and df.attrs["base_macs"] == 1000.0
    assert df.attrs["base_params"] == 100.0 and df.attrs["objectives"] == ["error", "macs"]


def test_summary_keys_never_overwrite_measured_columns():
    ev = make_eval(0.9, 0.5)
    ev.summary = {"accuracy": 123, "objective_error": 7, "kept/fc": 3}
    df = R.to_frame(make_result([ev]))
    assert df.loc[0, "accuracy"] == 0.9 and df.loc[0, "objective_error"] == pytest.approx(0.1)
    assert df.loc[0, "summary/accuracy"] == 123 and df.loc[0, "summary/objective_error"] == 7
    assert df.loc[0, "kept/fc"] == 3


def test_genome_hash_is_short_and_equal_for_equal_genomes():
    a = R.genome_hash(np.array([True, False, True]))
    assert a == R.genome_hash(np.array([True, False, True]))
    assert a != R.genome_hash(np.array([True, True, True]))
    assert len(a) == 12 and int(a, 16) >= 0


def test_to_frame_of_an_empty_archive_has_the_columns():
    df = R.to_frame(make_result([]))
    assert len(df) == 0 and "macs_ratio" in df.columns
    assert len(R.pareto_front(df)) == 0
    assert R.hypervolume(df) == 0.0


def test_to_frame_rejects_other_types():
    with pytest.raises(MopruneValueError, match="result must be a moprune SearchResult"):
        R.to_frame({"archive": []})


# ------------------------------------------------------------------------------ pareto_front

def test_pareto_front_rows_and_order(result):
    front = R.pareto_front(result)
    assert list(front.index) == [4, 3, 2, 1, 0]  # sorted by MACs ratio
    assert front.attrs["front_objectives"] == ["error", "macs"]
    # a front's front is itself; a frame gives the same as the result
    assert list(R.pareto_front(front).index) == [4, 3, 2, 1, 0]
    assert list(R.pareto_front(R.to_frame(result)).index) == [4, 3, 2, 1, 0]


def test_pareto_front_drops_failed_duplicate_and_infeasible_rows():
    points = POINTS + [
        make_eval(0.999, 0.05, error="CUDA out of memory"),  # would dominate everything
        make_eval(0.97, 0.3, key="a0.97-m0.3"),  # the same plan as eval 2, again
        make_eval(0.995, 0.15, feasible=False),  # infeasible
    ]
    result = make_result(points, max_accuracy_drop=1.0)
    front = R.pareto_front(result)
    assert list(front.index) == [4, 3, 2, 1, 0]
    everything = R.pareto_front(result, feasible_only=False)
    assert list(everything.index) == [4, 9]  # (0.995, 0.15) dominates all but the cheapest


def test_pareto_front_with_other_objectives():
    points = [make_eval(0.99, 1.0, sparsity=0.0), make_eval(0.98, 0.6, sparsity=0.7),
              make_eval(0.97, 0.3, sparsity=0.5)]
    result = make_result(points, objectives=("error", "sparsity"))
    # sparsity is maximised: density 1 - sparsity is minimised; eval 2 is dominated by eval 1
    assert set(R.pareto_front(result).index) == {0, 1}
    assert set(R.pareto_front(result, objectives=("error", "macs")).index) == {0, 1, 2}
    with pytest.raises(MopruneValueError, match="objectives must be names among"):
        R.pareto_front(result, objectives=("latency",))


# -------------------------------------------------------------------------------------- pick

# A front with a sharp knee at eval 3: (error, macs) convex with a corner.
KNEE = [(0.99, 1.0), (0.988, 0.8), (0.986, 0.6), (0.984, 0.4), (0.90, 0.35), (0.80, 0.3), (0.70, 0.25)]


def test_pick_knee_is_the_corner_and_matches_pymoo():
    with warnings.catch_warnings():  # pymoo's import warns about a scipy namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        from pymoo.mcdm.high_tradeoff import HighTradeoffPoints

    result = make_result(KNEE)
    row = R.pick(result, "knee")
    assert row.name == 3 and row["accuracy"] == 0.984 and row["macs_ratio"] == 0.4
    front = R.pareto_front(result)
    F = R.objective_matrix(front, ("error", "macs"))
    Fn = (F - F.min(0)) / (F.max(0) - F.min(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(front.index[HighTradeoffPoints().do(Fn)]) == [3]


def test_pick_knee_leaves_the_warning_filters_alone():
    before = list(warnings.filters)
    R.pick(make_result(KNEE), "knee")
    assert list(warnings.filters) == before


def test_pick_knee_small_fronts_fall_back_to_equal_weight_asf():
    assert R.pick(make_result([(0.99, 1.0)]), "knee").name == 0
    # two points: normalised (0, 1) and (1, 0) tie on ASF; the first in MACs order wins
    assert R.pick(make_result([(0.99, 1.0), (0.5, 0.1)]), "knee").name == 1


def test_pick_asf_and_pseudo_weights_follow_the_weights(result):
    # only error matters: the most accurate; only MACs matter: the cheapest
    assert R.pick(result, "asf", weights=[1, 0]).name == 0
    assert R.pick(result, "asf", weights=[0, 1]).name == 4
    assert R.pick(result, "pseudo_weights", weights=[1, 0]).name == 0
    assert R.pick(result, "pseudo_weights", weights=[0, 1]).name == 4
    # equal weights: normalised front (error, macs) = (0.98,0), (0.18,0.11), (0.04,0.22),
    # (0.02,0.56), (0,1): the smallest max is eval 3's 0.18
    assert R.pick(result, "asf", weights=[1, 1]).name == 3
    # pseudo-weights of eval 2: ((1-0.04), (1-0.22)) / sum = (0.55, 0.45): closest to (0.55, 0.45)
    assert R.pick(result, "pseudo_weights", weights=[0.55, 0.45]).name == 2


def test_pick_max_drop_and_target_macs(result):
    # base 0.99: drops are 0, 1, 2, 9, 49 points
    assert R.pick(result, "max_drop", max_drop=0).name == 0
    assert R.pick(result, "max_drop", max_drop=1.0).name == 1
    assert R.pick(result, "max_drop", max_drop=2.5).name == 2
    assert R.pick(result, "max_drop", max_drop=100).name == 4
    assert R.pick(result, "target_macs", target_macs=1.0).name == 0
    assert R.pick(result, "target_macs", target_macs=0.35).name == 2
    assert R.pick(result, "target_macs", target_macs=0.1).name == 4


def test_pick_max_drop_with_a_margin_of_standard_errors():
    # a retrained front: drops 0.25 +- 0.09 (smallest), 0.21 +- 0.08, 0.10 +- 0.07 (largest)
    frame = pd.DataFrame({"accuracy": [0.9888, 0.9892, 0.9903], "error": [0.0112, 0.0108, 0.0097],
                          "macs_ratio": [0.05, 0.07, 0.10], "accuracy_drop": [0.25, 0.21, 0.10],
                          "accuracy_drop_se": [0.09, 0.08, 0.07]}, index=pd.Index([10, 208, 143], name="eval"))
    frame.attrs["objectives"] = ["error", "macs"]
    assert R.pick(frame, "max_drop", max_drop=0.3).name == 10
    assert R.pick(frame, "max_drop", max_drop=0.3, margin_se=1.0).name == 208  # 0.29 fits, 0.34 does not
    assert R.pick(frame, "max_drop", max_drop=0.3, margin_se=2.0).name == 143
    with pytest.raises(MopruneValueError, match=r"max_drop=0\.1 accuracy points with a margin of 1\.0 standard "
                                                r"errors; the closest is eval 143"):
        R.pick(frame, "max_drop", max_drop=0.1, margin_se=1.0)
    with pytest.raises(MopruneValueError, match=r"margin_se must be .*>= 0.*got -1"):
        R.pick(frame, "max_drop", max_drop=0.3, margin_se=-1)
    with pytest.raises(MopruneValueError, match="margin_se is used by method 'max_drop' only"):
        R.pick(frame, "knee", margin_se=1.0)
    with pytest.raises(MopruneValueError, match="margin_se must be 0 for a frame without an 'accuracy_drop_se'"):
        R.pick(frame.drop(columns="accuracy_drop_se"), "max_drop", max_drop=0.3, margin_se=1.0)


def test_pick_impossible_requests_name_the_closest_row():
    result = make_result([(0.97, 0.5), (0.95, 0.3)], base_accuracy=0.99)
    with pytest.raises(MopruneValueError, match=r"max_drop=1\.0.*closest is eval 0, accuracy drop 2 points"
                                                r".*macs ratio 0\.5"):
        R.pick(result, "max_drop", max_drop=1.0)
    with pytest.raises(MopruneValueError, match=r"target_macs=0\.2.*closest is eval 1.*macs ratio 0\.3"):
        R.pick(result, "target_macs", target_macs=0.2)


@pytest.mark.parametrize("method, kwargs, message", [
    ("asf", {"weights": [-1, 1]}, "weights must be 2 non-negative numbers"),
    ("asf", {"weights": [0, 0]}, "not all zero; got"),
    ("pseudo_weights", {"weights": [1, 1, 1]}, "weights must be 2 non-negative"),
    ("max_drop", {"max_drop": -0.5}, r"max_drop must be a finite real number >= 0 \(accuracy points\); got -0.5"),
    ("max_drop", {"max_drop": "1"}, "max_drop must be a finite real number >= 0"),
    ("target_macs", {"target_macs": 0}, r"target_macs must be a real number in \(0, 1\] \(MACs ratio\); got 0"),
    ("target_macs", {"target_macs": 1.5}, r"in \(0, 1\] \(MACs ratio\); got 1.5"),
    ("knee", {"weights": [1, 1]}, "weights is not used by method 'knee'"),
    ("asf", {}, r"method 'asf' needs weights=\.\.\."),
    ("max_drop", {"target_macs": 0.5}, r"method 'max_drop' needs max_drop"),
    ("nearest", {}, "unknown pick method 'nearest'; choose one of: asf, knee, max_drop, pseudo_weights, "
                    "target_macs"),
])
def test_pick_validates_arguments(result, method, kwargs, message):
    with pytest.raises(MopruneValueError, match=message):
        R.pick(result, method, **kwargs)


def test_pick_on_an_empty_front_says_so():
    result = make_result([make_eval(0.9, 0.5, error="boom")])
    with pytest.raises(MopruneValueError, match="front is empty"):
        R.pick(result, "knee")


# ------------------------------------------------------------------------------ hypervolume

def test_hypervolume_by_hand():
    F = np.array([[0.2, 0.6], [0.5, 0.3]])
    # 0.8 * 0.4 + 0.5 * 0.7 - 0.5 * 0.4
    assert R.hypervolume(F) == pytest.approx(0.47)
    # a point outside the box adds nothing; a dominated point adds nothing
    assert R.hypervolume(np.vstack([F, [[1.2, 0.0]], [[0.6, 0.7]]])) == pytest.approx(0.47)


def test_hypervolume_equals_pymoo_hv_scaled_by_the_box():
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(0)
    F = rng.uniform(0, 2, size=(30, 3))
    ref = np.array([2.0, 2.5, 3.0])
    assert R.hypervolume(F, ref_point=ref) == pytest.approx(HV(ref_point=ref)(F) / ref.prod())


def test_hypervolume_of_a_result_uses_its_front(result):
    # front (error, macs): (0.5,0.1), (0.1,0.2), (0.03,0.3), (0.02,0.6), (0.01,1.0); ref (1, 1)
    expected = 0.5 * 0.9 + (0.5 - 0.1) * 0.8 + (0.1 - 0.03) * 0.7 + (0.03 - 0.02) * 0.4
    assert R.hypervolume(result) == pytest.approx(expected)
    assert R.hypervolume(R.to_frame(result)) == pytest.approx(expected)
    assert R.hypervolume(result, ref_point=(0.5, 1.0)) == pytest.approx(
        ((0.5 - 0.1) * 0.8 + (0.1 - 0.03) * 0.7 + (0.03 - 0.02) * 0.4) / 0.5)


def test_hypervolume_validates_ref_point(result):
    with pytest.raises(MopruneValueError, match=r"ref_point must be 2 positive numbers"):
        R.hypervolume(result, ref_point=(1.0, 0.0))
    with pytest.raises(MopruneValueError, match=r"ref_point must be 2 positive numbers"):
        R.hypervolume(result, ref_point=(1.0, 1.0, 1.0))


# ----------------------------------------------------------------------------------- compare

def test_compare_by_hand():
    # Algorithm A, two seeds; B (a weighted-sum GA) one seed whose rejected candidates still count.
    a0 = make_result([(0.5, 0.5), (0.9, 0.5), (0.9, 0.25), (0.95, 0.2)], algorithm="nsga2", seed=0)
    a1 = make_result([(0.6, 0.5), (0.6, 0.5), (0.8, 0.5), (0.9, 0.5)], algorithm="nsga2", seed=1)
    b0 = make_result([(0.1, 0.9), (0.1, 0.95), (0.9, 0.5)], algorithm="ga-weighted", seed=0)
    df = R.compare({"nsga2": [a0, a1], "ga-weighted": b0}, grid=[1, 2, 4])
    assert list(df.columns) == ["algorithm", "n_evals", "hv_mean", "hv_std", "n_runs"]
    a = df[df.algorithm == "nsga2"].set_index("n_evals")
    # error/macs of a0 after 1, 2, 4 evals: (0.5, 0.5); (0.1, 0.5) dominates it; (0.05, 0.2) dominates all
    hv_a0 = [0.5 * 0.5, 0.9 * 0.5, 0.95 * 0.8]
    # a1's second eval repeats the first plan (same plan_key); its fourth is (0.1, 0.5)
    hv_a1 = [0.6 * 0.5, 0.6 * 0.5, 0.9 * 0.5]
    for k, x, y in zip([1, 2, 4], hv_a0, hv_a1):
        assert a.loc[k, "hv_mean"] == pytest.approx((x + y) / 2)
        assert a.loc[k, "hv_std"] == pytest.approx(np.std([x, y], ddof=1))
        assert a.loc[k, "n_runs"] == 2
    b = df[df.algorithm == "ga-weighted"].set_index("n_evals")
    assert b.loc[1, "hv_mean"] == pytest.approx(0.1 * 0.1)
    assert b.loc[2, "hv_mean"] == pytest.approx(0.1 * 0.1)
    assert np.isnan(b.loc[2, "hv_std"]) and b.loc[2, "n_runs"] == 1
    # b0 has only 3 evaluations: nothing at 4
    assert np.isnan(b.loc[4, "hv_mean"]) and b.loc[4, "n_runs"] == 0


def test_compare_default_grid_and_cached_counting():
    run = make_result([make_eval(0.5, 0.5), make_eval(0.5, 0.5, cached=True), make_eval(0.9, 0.5),
                       make_eval(0.9, 0.5, cached=True)])
    every = R.compare({"x": [run]}, n_points=4)
    assert list(every.n_evals) == [1, 2, 3, 4]
    assert list(every.hv_mean) == pytest.approx([0.25, 0.25, 0.45, 0.45])
    run_only = R.compare({"x": [run]}, n_points=4, count_cached=False)
    assert list(run_only.n_evals) == [1, 2]
    assert list(run_only.hv_mean) == pytest.approx([0.25, 0.45])


def test_hypervolume_curve_matches_compare_of_one_run(result):
    curve = R.hypervolume_curve(result, grid=[2, 5, 7, 9])
    assert list(curve.n_evals) == [2, 5, 7, 9]
    assert curve.hv.iloc[2] == pytest.approx(R.hypervolume(result))
    assert np.isnan(curve.hv.iloc[3])
    # the base (error 0.01, macs 1.0) sits on the box's edge: only (0.02, 0.6) adds volume
    assert curve.hv.iloc[0] == pytest.approx(0.98 * 0.4)


def test_compare_uses_the_shared_objectives():
    nsga2 = make_result([(0.9, 0.5)], objectives=("error", "macs"))
    weighted = make_result([(0.9, 0.5), (0.5, 0.1)], objectives=("error", "macs", "neg_score"))
    df = R.compare({"nsga2": nsga2, "ga": weighted}, grid=[1, 2])
    assert df.attrs["objectives"] == ["error", "macs"]
    # ga after 2 evals: (0.1, 0.5) and (0.5, 0.1): 0.9*0.5 + 0.5*0.9 - 0.5*0.5
    assert df.hv_mean.tolist()[2:] == pytest.approx([0.45, 0.65])
    params = make_result([(0.9, 0.5)], objectives=("params", "sparsity"))
    with pytest.raises(MopruneValueError, match="share no objective"):
        R.compare({"a": [nsga2], "b": [params]})
    assert R.compare({"a": [nsga2], "b": [params]}, objectives=("error", "macs"), grid=[1]).hv_mean.tolist() == \
        pytest.approx([0.45, 0.45])


def test_compare_validates():
    a = make_result([(0.9, 0.5)], objectives=("error", "macs"))
    with pytest.raises(MopruneValueError, match="results must be a non-empty mapping"):
        R.compare([a])
    with pytest.raises(MopruneValueError, match="grid must be a strictly increasing"):
        R.compare({"a": [a]}, grid=[3, 2])
    with pytest.raises(MopruneValueError, match=r"results\['a'\] must be at least one run"):
        R.compare({"a": []})


def test_frames_keep_attrs_through_filtering(result):
    df = R.to_frame(result)
    sub = df[df.generation == 0]
    assert isinstance(sub, pd.DataFrame) and sub.attrs["base_accuracy"] == 0.99
