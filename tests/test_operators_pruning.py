"""Pruning-aware operators, the space helpers they use, the focused view and the default search."""

import numpy as np
import pytest
from pymoo.core.individual import Individual
from pymoo.core.population import Population

from conftest import randomized_zoo_model
from conftest_search import tiny_problem
from moprune.algorithms import ALGORITHMS
from moprune.exceptions import MopruneValueError
from moprune.operators.pruning import (
    CostCeilingRepair,
    GroupUniformCrossover,
    KeepRatioMutation,
    PlanDuplicateElimination,
    SweepSampling,
    balance_groups,
    shrink_to_cost,
    uniform_sweep,
)
from moprune.problem import FocusedProblem
from moprune.searching import search
from moprune.space import ChannelSpace, WeightSpace


class _Holder:
    """What the operators need of a problem: its space and n_var."""

    def __init__(self, space):
        self.space = space
        self.n_var = space.n_var


@pytest.fixture(scope="module")
def lenet():
    return randomized_zoo_model("lenet5_caffe")


@pytest.fixture(scope="module", params=["binary", "ratio"])
def channel_space(request, lenet):
    return ChannelSpace(lenet, encoding=request.param)


def test_genomes_from_ratios_keeps_most_important_first(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    X = space.genomes_from_ratios(np.array([[0.5, 0.1, 0.02]]))
    for g, (sl, size) in enumerate(zip(space.group_slices, space.group_sizes)):
        kept = np.flatnonzero(X[0, sl])
        assert len(kept) == int(np.ceil([0.5, 0.1, 0.02][g] * size - 1e-9))
        scores = space.importance_scores[space.group_names[g]]
        assert scores[kept].min() >= np.delete(scores, kept).max()  # the top channels by L1
    assert np.allclose(space.group_ratios(X)[0], [np.ceil(r * s - 1e-9) / s for r, s in
                                                  zip([0.5, 0.1, 0.02], space.group_sizes)])


def test_binary_and_ratio_uniform_genomes_are_the_same_model(lenet):
    binary, ratio = ChannelSpace(lenet, encoding="binary"), ChannelSpace(lenet, encoding="ratio")
    R = np.array([[0.3, 0.3, 0.3], [0.7, 0.2, 0.9]])
    assert [binary.decode(x).kept for x in binary.genomes_from_ratios(R)] == \
        [ratio.decode(x).kept for x in ratio.genomes_from_ratios(R)]


def test_genomes_from_ratios_rejects_bad_shapes(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    with pytest.raises(MopruneValueError, match="R"):
        space.genomes_from_ratios(np.ones((2, 5)))
    with pytest.raises(MopruneValueError, match="keep ratios in \\[0, 1\\]"):
        space.genomes_from_ratios(np.full((1, 3), 1.5))


def test_weight_mask_keep_order_is_by_magnitude(lenet):
    space = WeightSpace(lenet, encoding="mask", layers=["conv1"])
    X = space.genomes_from_ratios(np.array([[0.25]]))
    w = lenet.conv1.weight.detach().abs().flatten().numpy()
    assert w[X[0]].min() >= w[~X[0]].max()
    assert X[0].sum() == int(np.ceil(0.25 * w.size))


def test_uniform_sweep_spans_the_macs_range(channel_space):
    ratios = uniform_sweep(channel_space, 8, min_macs=0.02, max_macs=0.8)
    assert np.all(np.diff(ratios) > 0) and 4 <= len(ratios) <= 8
    G = channel_space.genomes_from_ratios(np.repeat(ratios[:, None], 3, axis=1))
    macs = channel_space.cost(G)["macs_ratio"]
    assert np.all(np.diff(macs) > 0)
    assert macs[0] < 0.05 and macs[-1] > 0.5


def test_sweep_sampling_starts_with_uniform_models(channel_space):
    X = SweepSampling(sweep_fraction=0.5).do(_Holder(channel_space), 20, random_state=np.random.default_rng(0)).get("X")
    assert X.shape == (20, channel_space.n_var)
    R = channel_space.group_ratios(X)
    n_uniform = int(np.sum(np.ptp(R, axis=1) < 0.05))
    assert n_uniform >= 8  # the sweep half
    assert np.ptp(np.log(R[10:]), axis=1).mean() > 0.2  # the rest differs per group


def test_focused_sweep_max_macs_bounds_the_uniform_start(channel_space):
    def largest_uniform(max_macs):
        X = SweepSampling(sweep_fraction=0.5, max_macs=max_macs).do(
            _Holder(channel_space), 20, random_state=np.random.default_rng(0)).get("X")
        return channel_space.cost(X[:10])["macs_ratio"].max()

    assert largest_uniform(0.9) > 0.6
    assert largest_uniform(0.3) < 0.45


def test_keep_ratio_mutation_prunes_least_important_first(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    X = space.genomes_from_ratios(np.full((50, 3), 0.5))
    Y = KeepRatioMutation(swap_prob=0.0).do(_Holder(space), Population.new(X=X),
                                            random_state=np.random.default_rng(1)).get("X")
    changed = 0
    for y in Y:
        for g, sl in enumerate(space.group_slices):
            kept = np.flatnonzero(y[sl])
            scores = space.importance_scores[space.group_names[g]]
            assert scores[kept].min() >= np.delete(scores, kept).max(initial=-np.inf)  # still a top-k prefix
        changed += not np.array_equal(y, X[0])
    assert changed == len(Y)  # every individual moves at least one channel


def test_keep_ratio_mutation_swaps_near_the_boundary(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    X = space.genomes_from_ratios(np.full((40, 3), 0.5))
    mutation = KeepRatioMutation(sigma=1e-6, final_sigma=1e-6, swap_prob=1.0, swap_window=0.1)
    Y = mutation.do(_Holder(space), Population.new(X=X), random_state=np.random.default_rng(2)).get("X")
    order = space.keep_order()
    for y in Y:
        for sl in space.group_slices:
            size = sl.stop - sl.start
            # whatever moved lies within the boundary windows (plus the +-1 count step)
            moved = np.flatnonzero(y[sl] != X[0, sl])
            assert np.all(np.abs(order[sl][moved] - size / 2) <= 0.1 * size / 2 + 2)


def test_keep_ratio_mutation_on_ratio_genomes_gives_exact_counts(lenet):
    space = ChannelSpace(lenet, encoding="ratio")
    X = np.full((30, 3), 0.5)
    Y = KeepRatioMutation().do(_Holder(space), Population.new(X=X), random_state=np.random.default_rng(3)).get("X")
    counts = Y * np.asarray(space.group_sizes)
    assert np.allclose(counts, np.round(counts)) and np.all((Y > 0) & (Y <= 1))
    assert np.all(np.any(Y != 0.5, axis=1))


def test_group_uniform_crossover_swaps_whole_groups(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    a, b = space.genomes_from_ratios(np.array([[0.2, 0.2, 0.2], [0.9, 0.9, 0.9]]))
    parents = Population.new(X=np.stack([a, b]))
    off = GroupUniformCrossover(prob=1.0).do(_Holder(space), parents, np.array([[0, 1]] * 20),
                                             random_state=np.random.default_rng(4)).get("X")
    for child in off:
        for sl in space.group_slices:
            assert np.array_equal(child[sl], a[sl]) or np.array_equal(child[sl], b[sl])
    assert len({c.tobytes() for c in off}) > 2  # mixes, not only copies


def test_plan_duplicate_elimination_uses_plans_and_history(lenet):
    space = ChannelSpace(lenet, encoding="ratio")
    elim = PlanDuplicateElimination(space)
    # 0.5 and 0.49 keep the same 10 of conv1's 20 channels: one plan
    pop = Population.new(X=np.array([[0.5, 0.5, 0.5], [0.49, 0.5, 0.5], [0.3, 0.3, 0.3]]))
    assert len(elim.do(pop)) == 2
    elim.remember(Population.new(X=np.array([[0.3, 0.3, 0.3]])))
    assert len(elim.do(pop)) == 1
    elim.check_seen = False
    assert len(elim.do(pop)) == 2
    assert elim.key(Individual(X=np.array([0.5, 0.5, 0.5]))) == space.decode(np.array([0.49, 0.5, 0.5])).key


def test_focused_problem_logs_costs_and_bands_accuracy_but_archives_the_parent():
    problem = tiny_problem(max_accuracy_drop=None)
    view = FocusedProblem(problem, 2.0)
    X = np.ones((3, problem.n_var), dtype=bool)
    X[1, ::2] = False
    X[2, 1:] = False
    out = view.evaluate(X, return_as_dictionary=True)
    m = problem.measure(X)
    assert np.allclose(out["F"][:, 0], 1 - m["accuracy"])
    assert np.allclose(out["F"][:, 1], np.log(m["macs_ratio"]))
    assert np.allclose(out["G"][:, 0], m["drop"] - 2.0)
    assert [e.objectives for e in problem.archive] == [tuple(row) for row in problem.objective_values(m)]
    assert all(e.feasible for e in problem.archive)  # the parent has no constraint


def test_search_defaults_to_focused():
    import inspect

    assert inspect.signature(search).parameters["algorithm"].default == "focused"
    result = search(tiny_problem(), n_evals=30, seed=0)
    assert result.algorithm == "focused" and len(result.archive) == 30
    assert len({e.plan_key for e in result.archive}) == 30  # no plan asked for twice


def test_focused_screens_dominated_candidates_unless_told_not_to():
    result = search(tiny_problem(), n_evals=60, seed=2)
    screened = [e for e in result.archive if e.screened]
    assert len(screened) >= 3
    measured = [e for e in result.archive if not e.screened]
    for e in screened:  # each is dominated by a fully measured candidate of an earlier generation
        assert any(d.generation < e.generation and d.macs_ratio <= e.macs_ratio and d.accuracy > e.accuracy
                   for d in measured)
    from moprune.results import pareto_front, to_frame

    assert to_frame(result)["screened"].tolist() == [e.screened for e in result.archive]
    assert not pareto_front(result)["screened"].any()  # dominated, so never on the front
    assert not any(e.screened for e in search(tiny_problem(), n_evals=60, seed=2, screen=False).archive)
    with pytest.raises(MopruneValueError, match="screen"):
        search(tiny_problem(), n_evals=20, seed=2, screen="yes")


@pytest.mark.slow
def test_focused_finds_smaller_accurate_models_than_nsga2_on_a_trained_cnn():
    """On a real channel space (LeNet-5 trained on a toy task until it solves it), at equal evaluations."""
    from test_export import tiny_splits, trained_lenet5

    import moprune

    data = tiny_splits(n_train=2048, n_eval=512)
    model = trained_lenet5(data, epochs=4)
    space = ChannelSpace(model, encoding="binary")
    for seed in (0, 1):
        best = {}
        for name in ("focused", "nsga2"):
            problem = moprune.PruningProblem(space, moprune.Evaluator(data.val, n_samples=None, num_threads=1))
            result = search(problem, name, n_evals=100, seed=seed)
            assert result.base_accuracy > 0.9  # a model worth pruning, not one at chance
            ok = [e.macs_ratio for e in result.archive if 100 * (result.base_accuracy - e.accuracy) <= 1.0]
            best[name] = min(ok + [1.0])  # the base model itself qualifies
        assert best["focused"] < 0.5 * best["nsga2"], (seed, best)


def test_focused_options_are_checked():
    problem = tiny_problem()
    with pytest.raises(MopruneValueError, match="sweep_fraction"):
        ALGORITHMS.get("focused")(problem, pop_size=8, sweep_fraction=2.0)
    with pytest.raises(MopruneValueError, match="band"):
        ALGORITHMS.get("focused")(problem, pop_size=8, band=-1.0)
    with pytest.raises(MopruneValueError, match="max_imbalance.*'auto'.*'even'"):
        ALGORITHMS.get("focused")(problem, pop_size=8, max_imbalance="even")
    with pytest.raises(MopruneValueError, match="max_imbalance"):
        ALGORITHMS.get("focused")(problem, pop_size=8, max_imbalance=0.5)


def test_focused_max_imbalance_auto_bounds_channel_groups_only(lenet):
    import torch
    from torch.utils.data import TensorDataset

    import moprune

    data = TensorDataset(torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    for space, expected in ((ChannelSpace(lenet, encoding="binary"), 2.0), (WeightSpace(lenet, encoding="ratio"), None)):
        problem = moprune.PruningProblem(space, moprune.Evaluator(data, n_samples=None, num_threads=1))
        algorithm = ALGORITHMS.get("focused")(problem, pop_size=8)
        assert algorithm.repair.max_imbalance == expected
        assert ALGORITHMS.get("focused")(problem, pop_size=8, max_imbalance=None).repair.max_imbalance is None


def test_batchnorm_model_without_training_data_is_refused():
    import torch
    from torch.utils.data import TensorDataset

    from moprune.evaluation import Evaluator
    from moprune.problem import PruningProblem

    space = ChannelSpace(randomized_zoo_model("resnet8"), encoding="ratio")
    data = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    with pytest.raises(MopruneValueError, match="evaluator.*train_data.*BatchNorm.*bn_recalibration=False"):
        PruningProblem(space, Evaluator(data, n_samples=32))
    assert PruningProblem(space, Evaluator(data, n_samples=32, bn_recalibration=False)).n_var == space.n_var
    ok = PruningProblem(space, Evaluator(data, n_samples=32, train_data=data))
    assert ok.evaluator.train_subset is not None


def test_band_applies_after_band_after_of_the_budget():
    def final_drops(band_after):
        problem = tiny_problem()
        result = search(problem, "focused", pop_size=10, n_evals=80, seed=1, band=3.0, band_after=band_after)
        pop = result.pymoo_result.algorithm.pop
        return np.array([ind.data["band_G"][0] + 3.0 for ind in pop]), pop

    drops, pop = final_drops(0.0)
    assert (drops <= 3.0 + 1e-9).all()  # the survivors are all within the band
    assert all(ind.feas for ind in pop)
    drops_late, pop_late = final_drops(1.0)  # the band never applied: the whole front survives
    assert (drops_late > 3.0).any()


def test_shrink_to_cost_fits_the_ceiling_and_keeps_a_genome_s_own_units(channel_space):
    space = channel_space
    R = np.array([[1.0, 1.0, 1.0], [0.9, 0.4, 0.7], [0.1, 0.1, 0.1]])
    X = space.repair()._do(None, space.genomes_from_ratios(R))
    if space.vtype is bool:  # a genome that is not a uniform one: its own choice of units must survive
        X[1, space.group_slices[0].start] = not X[1, space.group_slices[0].start]
        X = space.repair()._do(None, X)
    before = space.cost(X)["macs_ratio"]
    ceiling = 0.3
    assert before[0] > ceiling and before[2] < ceiling
    Y = shrink_to_cost(space, X, ceiling)
    after = space.cost(Y)["macs_ratio"]
    assert (after <= ceiling + 1e-12).all()
    assert np.array_equal(Y[2], X[2])  # within the ceiling: untouched
    assert after[0] > 0.5 * ceiling  # shrunk to fit, not to nothing
    if space.vtype is bool:
        assert not (Y & ~X).any()  # only drops units, never adds one
    assert (space.group_ratios(Y) <= space.group_ratios(X) + 1e-12).all()


def test_cost_ceiling_repair_is_the_space_repair_until_a_ceiling_is_set(lenet):
    space = ChannelSpace(lenet, encoding="ratio")
    repair = CostCeilingRepair(space)
    X = np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert np.array_equal(repair._do(None, X), space.repair()._do(None, X))
    repair.ceiling = 0.2
    assert (space.cost(repair._do(None, X))["macs_ratio"] <= 0.2 + 1e-12).all()


@pytest.mark.parametrize("ceiling_drop, bound_drop", [(None, 5.0), (10.0, 10.0)])
def test_focused_saturation_keeps_dominance_and_bounds_offspring_cost(ceiling_drop, bound_drop):
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    problem = tiny_problem()
    # the tiny MLP loses accuracy fast: within 5 points is its "kept the base accuracy"; the
    # ceiling follows the saturation point (ceiling_drop None) or its own drop
    result = search(problem, "focused", pop_size=10, n_evals=100, seed=0, saturation_drop=5.0,
                    ceiling_factor=1.2, ceiling_drop=ceiling_drop, ceiling_until=1.0)
    algorithm = result.pymoo_result.algorithm
    pop = algorithm.pop
    raw = np.array([ind.data["raw_F"] for ind in pop])
    seen = np.array([ind.F for ind in pop])
    assert not np.allclose(raw, seen)  # compressed above the saturation point ...
    sort = NonDominatedSorting()
    assert [sorted(f) for f in sort.do(raw)] == [sorted(f) for f in sort.do(seen)]  # ... without changing ranks
    # offspring of a generation are repaired under the ceiling the generations before set
    archive = problem.archive
    for g in range(1, max(e.generation for e in archive) + 1):
        kept = [e.macs_ratio for e in archive
                if e.generation < g and 100 * (result.base_accuracy - e.accuracy) <= bound_drop]
        ceiling = min(1.0, 1.2 * min(kept)) if kept else 1.0
        assert max(e.macs_ratio for e in archive if e.generation == g) <= ceiling + 1e-9, g
    assert algorithm.repair.ceiling < max(e.macs_ratio for e in archive if e.generation == 0)  # it binds
    within = [e.macs_ratio for e in archive if 100 * (result.base_accuracy - e.accuracy) <= bound_drop]
    assert algorithm.repair.ceiling == pytest.approx(min(1.0, 1.2 * min(within)))
    # the compression still starts at the saturation point (within 5 points), whatever the ceiling follows
    saturated = [e.macs_ratio for e in archive if 100 * (result.base_accuracy - e.accuracy) <= 5.0]
    j = algorithm._cost_columns().index(problem.objectives.index("macs"))
    assert np.exp(algorithm._saturation[j]) == pytest.approx(min(saturated))


def test_focused_ceiling_is_lifted_after_ceiling_until_of_the_budget():
    def final_ceiling(**until):
        result = search(tiny_problem(), "focused", pop_size=10, n_evals=60, seed=0, saturation_drop=5.0,
                        ceiling_factor=1.2, **until)
        return result.pymoo_result.algorithm.repair.ceiling

    assert final_ceiling(ceiling_until=1.0) is not None
    assert final_ceiling(ceiling_until=0.3) is None
    assert final_ceiling() is None  # the default looks above the ceiling late in the run
    with pytest.raises(MopruneValueError, match="ceiling_until"):
        ALGORITHMS.get("focused")(tiny_problem(), pop_size=8, ceiling_until=0.0)
    with pytest.raises(MopruneValueError, match="ceiling_factor"):
        ALGORITHMS.get("focused")(tiny_problem(), pop_size=8, ceiling_factor=0.5)
    with pytest.raises(MopruneValueError, match="ceiling_drop"):
        ALGORITHMS.get("focused")(tiny_problem(), pop_size=8, ceiling_drop=-1.0)


def test_focused_keeps_the_front_outside_the_band_and_breeds_from_it():
    from pymoo.util.nds.non_dominated_sorting import find_non_dominated

    def run(tail_share):
        problem = tiny_problem()
        result = search(problem, "focused", pop_size=10, n_evals=100, seed=0, band=3.0, tail_share=tail_share)
        return problem, result, result.pymoo_result.algorithm

    problem, result, algorithm = run(0.3)
    tail = algorithm._tail
    assert len(tail) > 0
    assert all(ind.data["band_G"][0] > 0 for ind in tail)  # every member lost more than the band
    raw = np.array([ind.data["raw_F"] for ind in tail])
    assert len(find_non_dominated(raw)) == len(tail)  # and none dominates another
    # it is the front of every out-of-band candidate evaluated: each of them is weakly dominated by a member
    out = [e for e in problem.archive if 100 * (result.base_accuracy - e.accuracy) > 3.0 + 1e-9]
    assert out
    for e in out:
        point = np.array([1.0 - e.accuracy, np.log(e.macs_ratio)])
        assert (raw <= point + 1e-9).all(axis=1).any(), e
    _, _, without = run(0.0)
    assert len(without._tail) == 0  # no tail kept, none bred
    with pytest.raises(MopruneValueError, match="tail_share"):
        ALGORITHMS.get("focused")(tiny_problem(), pop_size=8, tail_share=0.8)


@pytest.mark.parametrize("budget", [{"max_macs": 0.15}, {"max_params": 0.2}, {"max_macs": 0.3, "max_params": 0.1}])
def test_focused_budget_bounds_every_candidate_and_spends_the_evaluations_near_it(budget):
    problem = tiny_problem()
    result = search(problem, "focused", pop_size=10, n_evals=80, seed=0, **budget)
    macs = np.array([e.macs_ratio for e in problem.archive])
    params = np.array([e.params_ratio for e in problem.archive])
    assert len(problem.archive) == 80
    assert (macs <= budget.get("max_macs", 1.0) + 1e-12).all()
    assert (params <= budget.get("max_params", 1.0) + 1e-12).all()
    # the budget's whole front is searched (no accuracy band by default under a budget) ...
    assert result.pymoo_result.algorithm.problem.band is None
    # ... and it is used: the largest candidate is near the binding limit, not far below it
    use = np.maximum(macs / budget.get("max_macs", np.inf), params / budget.get("max_params", np.inf))
    assert use.max() > 0.6


def test_focused_budget_is_checked():
    problem = tiny_problem()
    with pytest.raises(MopruneValueError, match="max_macs"):
        ALGORITHMS.get("focused")(problem, pop_size=8, max_macs=1.5)
    with pytest.raises(MopruneValueError, match="max_params.*a budget some model of this space fits"):
        ALGORITHMS.get("focused")(problem, pop_size=8, max_params=1e-6)
    with pytest.raises(MopruneValueError, match="band.*'auto'"):
        ALGORITHMS.get("focused")(problem, pop_size=8, band="wide")
    # an explicit band still applies under a budget
    assert search(tiny_problem(), "focused", pop_size=8, n_evals=16, seed=0, max_macs=0.5,
                  band=3.0).pymoo_result.algorithm.problem.band == 3.0


def test_sweep_sampling_tilted_twins_keep_the_macs_and_add_parameters(channel_space):
    sampling = SweepSampling(sweep_fraction=0.3, tilt=0.5, tilt_fraction=0.2)
    X = sampling.do(_Holder(channel_space), 20, random_state=np.random.default_rng(0)).get("X")
    assert X.shape == (20, channel_space.n_var)
    cost = channel_space.cost(X)
    sweep_macs, sweep_params = np.asarray(cost["macs_ratio"][:6]), np.asarray(cost["params_ratio"][:6])
    twins = slice(6, 10)
    assert (np.ptp(channel_space.group_ratios(X[twins]), axis=1) > 0).all()  # not uniform
    for macs, params in zip(cost["macs_ratio"][twins], cost["params_ratio"][twins]):
        level = int(np.argmin(np.abs(np.log(sweep_macs / macs))))
        assert abs(np.log(macs / sweep_macs[level])) < 0.2
        assert params > sweep_params[level]  # the same size, more parameters
    untilted = SweepSampling(sweep_fraction=0.3, tilt_fraction=0.0).do(
        _Holder(channel_space), 20, random_state=np.random.default_rng(0)).get("X")
    assert np.array_equal(untilted[:6], X[:6])
    with pytest.raises(MopruneValueError, match="tilt_fraction"):
        SweepSampling(tilt_fraction=1.5)


def _gmean(ratios):
    return np.exp(np.mean(np.log(ratios), axis=1))


def test_balance_groups_lifts_bottlenecks_and_leaves_balanced_genomes(channel_space):
    space = channel_space
    X = space.genomes_from_ratios(np.array([[0.5, 0.02, 0.6], [0.4, 0.3, 0.35]]))
    before = space.group_ratios(X)
    Y = balance_groups(space, X, 2.0)
    after = space.group_ratios(Y)
    assert np.array_equal(Y[1], X[1])  # within the bound already: untouched
    assert after[0, 1] >= _gmean(after[:1])[0] / 2.0 - 1e-9 > before[0, 1]  # the bottleneck is lifted
    assert np.allclose(after[0, [0, 2]], before[0, [0, 2]])  # the other groups keep theirs
    if space.vtype is bool:  # lifted by the most important pruned channels: still a top-k prefix
        g = 1
        sl = space.group_slices[g]
        kept = np.flatnonzero(Y[0, sl])
        scores = space.importance_scores[space.group_names[g]]
        assert scores[kept].min() >= np.delete(scores, kept).max()
    assert np.array_equal(balance_groups(space, X, 100.0), X)


def test_cost_ceiling_repair_balances_before_shrinking(lenet):
    space = ChannelSpace(lenet, encoding="binary")
    repair = CostCeilingRepair(space, max_imbalance=2.0)
    X = space.genomes_from_ratios(np.array([[0.9, 0.02, 0.9], [0.05, 0.9, 0.9]]))
    repair.ceiling = 0.2
    R = space.group_ratios(repair._do(None, X))
    assert (space.cost(repair._do(None, X))["macs_ratio"] <= 0.2 + 1e-12).all()
    assert (R.min(axis=1) >= _gmean(R) / 2.5).all()  # shrinking keeps the balance, up to rounding
    with pytest.raises(MopruneValueError, match="max_imbalance"):
        CostCeilingRepair(space, max_imbalance=0.5)


def test_focused_max_imbalance_bounds_every_candidate(lenet):
    problem = tiny_problem()
    result = search(problem, "focused", pop_size=10, n_evals=60, seed=0, max_imbalance=2.0)
    space = problem.space
    R = space.group_ratios(np.array([e.genome for e in result.archive]))
    sizes = np.array([sl.stop - sl.start for sl in space.group_slices])
    # at least the geometric mean / 2, up to one unit of the shrinking that may follow
    assert (R.min(axis=1) >= _gmean(R) / 2.0 - 1.0 / sizes.min()).all()
    loose = search(tiny_problem(), "focused", pop_size=10, n_evals=60, seed=0)
    R_loose = space.group_ratios(np.array([e.genome for e in loose.archive]))
    assert (R_loose.min(axis=1) / _gmean(R_loose)).min() < (R.min(axis=1) / _gmean(R)).min()


def test_focused_keeps_the_front_within_ceiling_drop_and_breeds_it_above_the_ceiling():
    from pymoo.util.nds.non_dominated_sorting import find_non_dominated

    def run(**head):
        problem = tiny_problem()
        result = search(problem, "focused", pop_size=10, n_evals=120, seed=0, saturation_drop=5.0, ceiling_drop=5.0,
                        ceiling_factor=1.0, ceiling_until=1.0, **head)
        return problem, result, result.pymoo_result.algorithm

    def above_ceiling(problem, result):
        """Candidates of each generation above the ceiling the generations before set."""
        archive, count = problem.archive, 0
        for g in range(1, max(e.generation for e in archive) + 1):
            kept = [e.macs_ratio for e in archive
                    if e.generation < g and 100 * (result.base_accuracy - e.accuracy) <= 5.0]
            ceiling = min(kept) if kept else 1.0
            count += sum(e.macs_ratio > ceiling + 1e-9 for e in archive if e.generation == g)
        return count

    problem, result, algorithm = run(head_share=0.3, head_after=0)
    head = algorithm._head
    assert len(head) > 0
    assert all(ind.get("drop") <= 5.0 for ind in head)  # every member is within ceiling_drop of the base
    raw = np.array([ind.data["raw_F"] for ind in head])
    assert len(find_non_dominated(raw)) == len(head)
    kept = [e for e in problem.archive if 100 * (result.base_accuracy - e.accuracy) <= 5.0]
    for e in kept:  # the front of every such candidate: each is weakly dominated by a member
        point = np.array([1.0 - e.accuracy, np.log(e.macs_ratio)])
        assert (raw <= point + 1e-9).all(axis=1).any(), e
    assert above_ceiling(problem, result) > 0  # its offspring are not bound by the ceiling
    problem, result, without = run(head_share=0.0)
    assert len(without._head) == 0 and above_ceiling(problem, result) == 0
    problem, result, late = run(head_share=0.3, head_after=120)  # never reached: nothing bred
    assert above_ceiling(problem, result) == 0
    for bad in ({"head_share": 0.8}, {"head_after": 0.5}, {"head_after": -1}):
        with pytest.raises(MopruneValueError, match=next(iter(bad))):
            ALGORITHMS.get("focused")(tiny_problem(), pop_size=8, **bad)


@pytest.mark.parametrize("survival", ["smsemoa", "nsga3"])
def test_focused_takes_another_pymoo_survival(survival):
    """The default search with SMS-EMOA's or NSGA-III's survival: the same budget, a front, reproducible."""
    result = search(tiny_problem(), n_evals=60, seed=3, survival=survival)
    default = search(tiny_problem(), n_evals=60, seed=3)
    assert len(result.archive) == 60
    # the first population is the same sweep; the survivors (so the later generations) differ
    first = [e.plan_key for e in result.archive if e.generation == 0]
    assert first and first == [e.plan_key for e in default.archive if e.generation == 0]
    assert [e.plan_key for e in result.archive] != [e.plan_key for e in default.archive]
    again = search(tiny_problem(), n_evals=60, seed=3, survival=survival)
    assert [e.plan_key for e in again.archive] == [e.plan_key for e in result.archive]


def test_focused_survival_is_checked_by_name():
    with pytest.raises(MopruneValueError, match="survival"):
        search(tiny_problem(), n_evals=20, seed=0, survival="moead")
    try:
        import numba  # noqa: F401
    except ImportError:  # AGE-MOEA2 needs numba, which moprune does not install: a clear error
        from moprune.exceptions import MopruneError

        with pytest.raises(MopruneError, match="numba"):
            search(tiny_problem(), n_evals=20, seed=0, survival="agemoea2")
    else:
        assert len(search(tiny_problem(), n_evals=40, seed=0, survival="agemoea2").archive) == 40
