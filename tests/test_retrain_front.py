"""retrain_front: front points spread along MACs, retrained, measured, exported and pickable."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_export import tiny_splits, trained_lenet5

import moprune
from moprune.exceptions import MopruneValueError
from moprune.retraining import drop_standard_error, front_points, retrain_front
from moprune.train import correct_predictions


def test_front_points_spread_on_log_macs_and_keep_the_ends():
    front = pd.DataFrame({"macs_ratio": [0.5, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0], "accuracy": np.linspace(0.5, 1, 7)})
    chosen = front_points(front, 3)
    assert list(chosen["macs_ratio"]) == [0.01, 0.1, 1.0]
    assert list(front_points(front, 10)["macs_ratio"]) == sorted(front["macs_ratio"])
    assert len(front_points(front, 5)) == 5
    with pytest.raises(MopruneValueError, match="n_points"):
        front_points(front, 0)


@pytest.fixture(scope="module")
def searched():
    data = tiny_splits(n_train=256, n_eval=128)
    model = trained_lenet5(data, epochs=1)
    space = moprune.ChannelSpace(model, encoding="ratio")
    problem = moprune.PruningProblem(space, moprune.Evaluator(data.val, n_samples=None, num_threads=1))
    result = moprune.search(problem, "random", pop_size=8, n_evals=24, seed=0)
    return data, model, result


@pytest.mark.slow
def test_retrain_front_reports_retrained_validation_and_test(searched, tmp_path):
    data, model, result = searched
    front = moprune.pareto_front(result)
    frame = retrain_front(result, data=data, base_model=model, n_points=3, epochs=1, batch_size=64,
                          out_dir=str(tmp_path))
    assert len(frame) == min(3, len(front))
    assert frame["macs_ratio"].is_monotonic_increasing
    assert frame.index.isin(front.index).all()
    assert set(frame.index) >= {front["macs_ratio"].idxmin(), front["macs_ratio"].idxmax()}
    assert np.allclose(frame["error"], 1 - frame["accuracy"])
    base_val, base_test = frame.attrs["base_val_accuracy"], frame.attrs["base_test_accuracy"]
    assert np.allclose(frame["accuracy_drop"], 100 * (base_val - frame["accuracy"]))
    assert np.allclose(frame["test_drop"], 100 * (base_test - frame["test_accuracy"]))
    assert np.allclose(frame["search_accuracy"], front.loc[frame.index, "accuracy"])
    # the retrained MACs ratio is the one the search predicted
    assert np.allclose(frame["macs_ratio"], front.loc[frame.index, "macs_ratio"], rtol=1e-6)
    base_correct = correct_predictions(model, data.val)
    for index, path in frame["path"].items():
        loaded = moprune.load(path)
        rebuilt = result.space.materialize(frame.loc[index, "genome"])
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in rebuilt.parameters())
        # the drop's standard error is the paired one of the exported model against the base
        se = drop_standard_error(base_correct, correct_predictions(loaded, data.val))
        assert frame.loc[index, "accuracy_drop_se"] == pytest.approx(se)


def test_drop_standard_error_is_paired_on_the_same_images():
    base = torch.tensor([True] * 90 + [False] * 10)
    same = base.clone()
    assert drop_standard_error(base, same) == 0.0  # the same predictions: no doubt about the drop
    other = base.clone()
    other[:4] = False  # 4 images lost, nothing gained: differences are 1 on 4 of 100 images
    diff = np.array([1.0] * 4 + [0.0] * 96)
    assert drop_standard_error(base, other) == pytest.approx(100 * diff.std(ddof=1) / 10)
    with pytest.raises(MopruneValueError, match="correct must be one entry per image"):
        drop_standard_error(base, other[:50])


@pytest.mark.slow
def test_pick_on_a_retrained_front_uses_retrained_validation(searched):
    data, model, result = searched
    frame = retrain_front(result, data=data, base_model=model, n_points=4, epochs=1, batch_size=64)
    loose = moprune.pick(frame, "max_drop", max_drop=100.0)
    assert loose["macs_ratio"] == frame["macs_ratio"].min()
    tight_drop = float(frame["accuracy_drop"].min())
    tight = moprune.pick(frame, "max_drop", max_drop=max(tight_drop, 0.0))
    assert tight["accuracy_drop"] <= max(tight_drop, 0.0) + 1e-9


@pytest.mark.slow
def test_retrain_front_filters_and_bad_input(searched):
    data, model, result = searched
    front = moprune.pareto_front(result)
    cut = float(front["macs_ratio"].median())
    frame = retrain_front(result, data=data, base_model=model, n_points=2, epochs=1, batch_size=64, max_macs=cut)
    assert (frame["macs_ratio"] <= cut + 1e-12).all()
    upper = retrain_front(result, data=data, base_model=model, n_points=2, epochs=1, batch_size=64, min_macs=cut)
    assert (upper["macs_ratio"] >= cut - 1e-12).all()
    assert upper.index.isin(front.index[front["macs_ratio"] >= cut - 1e-12]).all()
    with pytest.raises(MopruneValueError, match="max_drop, max_macs, min_macs"):
        retrain_front(result, data=data, base_model=model, max_macs=1e-9)
    with pytest.raises(MopruneValueError, match="min_macs"):
        retrain_front(result, data=data, base_model=model, min_macs=0.5, max_macs=0.2)
    with pytest.raises(MopruneValueError, match="min_macs"):
        retrain_front(result, data=data, base_model=model, min_macs=1.5)
    with pytest.raises(MopruneValueError, match="result"):
        retrain_front(front, data=data, base_model=model)
    with pytest.raises(MopruneValueError, match="base_model"):
        retrain_front(result, data=data, base_model=None)


@pytest.mark.slow
def test_retrain_augment_changes_training_and_is_checked(searched):
    data, model, result = searched
    row = moprune.pareto_front(result).iloc[0]
    options = dict(data=data, base_model=model, epochs=1, batch_size=64, seed=0)
    plain = moprune.retrain((result.space, row["genome"]), **options)
    again = moprune.retrain((result.space, row["genome"]), **options)
    shifted = moprune.retrain((result.space, row["genome"]), augment="crop", **options)
    weights = [torch.cat([p.flatten() for p in r.model.parameters()]) for r in (plain, again, shifted)]
    assert torch.equal(weights[0], weights[1])  # same seed, same model
    assert not torch.equal(weights[0], weights[2])  # the shifted batches trained it differently
    with pytest.raises(MopruneValueError, match="augment"):
        moprune.retrain((result.space, row["genome"]), augment="rotate", **options)


@pytest.mark.slow
def test_uniform_twins_keep_the_better_on_validation(searched):
    data, model, result = searched
    options = dict(data=data, base_model=model, n_points=3, epochs=1, batch_size=64)
    plain = retrain_front(result, **options)
    twins = retrain_front(result, uniform_twins=True, **options)
    assert list(twins.index) == list(plain.index)
    # the front point's own retraining is the same as without twins (same seed, same budget)
    assert np.allclose(twins["search_model_accuracy"], plain["accuracy"])
    assert np.allclose(twins["accuracy"], np.maximum(twins["search_model_accuracy"], twins["uniform_accuracy"]))
    for index, row in twins.iterrows():
        if row["source"] == "uniform":
            assert row["test_accuracy"] == row["uniform_test_accuracy"]
            ratios = result.space.group_ratios(np.asarray(row["genome"])[None, :])[0]
            assert np.ptp(ratios) < 0.05, ratios  # the same fraction in every group (up to rounding)
        else:
            assert row["source"] == "search" and row["test_accuracy"] == row["search_model_test_accuracy"]
            assert np.array_equal(np.asarray(row["genome"]), np.asarray(plain.loc[index, "genome"]))
        # the twin is the uniform model of the nearest size
        assert abs(np.log(row["uniform_macs_ratio"]) - np.log(plain.loc[index, "macs_ratio"])) < 0.3
    with pytest.raises(MopruneValueError, match="uniform_twins"):
        retrain_front(result, uniform_twins="yes", **options)


def test_uniform_genome_keeps_the_same_fraction_everywhere_at_the_nearest_macs(searched):
    from moprune.operators.pruning import uniform_genome

    space = moprune.ChannelSpace(searched[1], encoding="binary")
    sizes = np.array([sl.stop - sl.start for sl in space.group_slices])
    previous = 0.0
    for target in (0.05, 0.2, 0.5, 1.0):
        genome = uniform_genome(space, target)
        kept = space.group_ratios(genome[None, :])[0]
        ratio = kept[np.argmax(sizes)]  # equal up to one unit, and at least one unit per group
        assert np.all((np.abs(kept - ratio) <= 1.0 / sizes + 1e-9) | (np.round(kept * sizes) == 1)), kept
        macs = float(space.cost(genome[None, :])["macs_ratio"][0])
        assert abs(np.log(macs / target)) < 0.35 and macs >= previous
        previous = macs
    assert float(space.cost(uniform_genome(space, 1.0)[None, :])["macs_ratio"][0]) == pytest.approx(1.0)
    with pytest.raises(MopruneValueError, match="macs_ratio"):
        uniform_genome(space, 0.0)


def test_allocation_genome_shares_the_budget_as_asked_at_the_target_macs(searched):
    from moprune.operators.pruning import allocation_genome

    space = moprune.ChannelSpace(searched[1], encoding="binary")
    n_groups = len(space.group_slices)
    for target in (0.1, 0.3):
        even = allocation_genome(space, np.ones(n_groups), target)
        skewed = allocation_genome(space, np.r_[np.ones(n_groups - 1), 4.0], target)
        for genome in (even, skewed):
            assert abs(np.log(float(space.cost(genome[None, :])["macs_ratio"][0]) / target)) < 0.35
        even_ratios, skewed_ratios = space.group_ratios(np.stack([even, skewed]))
        # the last group gets a larger share of the same budget, the others a smaller one
        assert skewed_ratios[-1] > even_ratios[-1] and skewed_ratios[:-1].mean() < even_ratios[:-1].mean()
    with pytest.raises(MopruneValueError, match="relative"):
        allocation_genome(space, np.zeros(n_groups), 0.1)


def test_allocations_at_most_a_budget_never_exceed_it(searched):
    from moprune.operators.pruning import allocation_genome, tilted_allocation
    from moprune.race import race_contenders

    space = moprune.ChannelSpace(searched[1], encoding="binary")
    rng = np.random.default_rng(0)
    over = 0
    for target in np.geomspace(0.1, 0.6, 12):  # lenet5 keeps 5.3% of its MACs at the fewest channels
        relative = np.exp(rng.normal(0.0, 0.5, len(space.group_slices)))
        nearest = allocation_genome(space, relative, target)
        capped = allocation_genome(space, relative, target, at_most=True)
        tilted = tilted_allocation(space, target, 0.3, at_most=True)
        macs = space.cost(np.stack([nearest, capped, tilted]))["macs_ratio"]
        over += macs[0] > target
        assert macs[1] <= target and macs[2] <= target
        assert abs(np.log(macs[1] / target)) < 0.35  # still near the budget
        contenders = race_contenders(space, capped, 6, macs_ratio=float(target), at_most=True, seed=int(target * 100))
        assert (space.cost(np.stack([g for _, g in contenders]))["macs_ratio"] <= target).all()
    assert over > 0  # without at_most, the nearest allocation is above the budget now and then


def test_tilted_allocation_keeps_more_parameters_at_the_same_macs(searched):
    from moprune.operators.pruning import params_per_macs, tilted_allocation, uniform_genome

    space = moprune.ChannelSpace(searched[1], encoding="binary")
    for target in (0.1, 0.3):
        weights = params_per_macs(space, target)
        assert weights.shape == (len(space.group_slices),) and (weights > 0).all()
        assert weights.max() / weights.min() > 1.5  # lenet5's fc layers hold far more weights per MAC
        flat, tilted = uniform_genome(space, target), tilted_allocation(space, target, 0.5)
        cost = space.cost(np.stack([flat, tilted]))
        assert abs(np.log(float(cost["macs_ratio"][1]) / target)) < 0.35
        assert cost["params_ratio"][1] > cost["params_ratio"][0]
        ratios = space.group_ratios(tilted[None, :])[0]
        # the group with most parameters per MAC keeps at least the share of the one with fewest
        assert ratios[int(np.argmax(weights))] >= ratios[int(np.argmin(weights))]
    with pytest.raises(MopruneValueError, match="tilt"):
        tilted_allocation(space, 0.1, 5.0)


def test_race_contenders_are_the_point_then_tilts_then_its_best_neighbors_then_random_allocations(searched):
    from moprune.race import race_contenders

    data, model, result = searched
    history = moprune.to_frame(result)
    point = moprune.pareto_front(result).sort_values("macs_ratio").iloc[-1]
    macs = float(point["macs_ratio"])
    contenders = race_contenders(result.space, point["genome"], 6, history=history, tolerance=0.5, seed=0)
    assert len(contenders) == 6 and contenders[0][0] == "search"
    assert np.array_equal(contenders[0][1], np.asarray(point["genome"]))
    sources = [s for s, _ in contenders]
    assert "params_tilt" in sources
    assert sources == sorted(sources, key=["search", "params_tilt", "search_neighbor", "random"].index)
    near = history[(history["macs_ratio"] <= macs + 1e-12) & (history["macs_ratio"] >= 0.5 * macs)]
    neighbors = [g for s, g in contenders if s == "search_neighbor"]
    accuracies = [float(near.loc[[np.array_equal(np.asarray(x), g) for x in near["genome"]], "accuracy"].iloc[0])
                  for g in neighbors]
    assert accuracies == sorted(accuracies, reverse=True)  # the search's most accurate first
    for source, genome in contenders:
        genome_macs = float(result.space.cost(genome[None, :])["macs_ratio"][0])
        assert genome_macs <= macs + 1e-9 if source == "search_neighbor" else abs(np.log(genome_macs / macs)) < 0.35
    assert len({g.tobytes() for _, g in contenders}) == 6
    again = race_contenders(result.space, point["genome"], 6, history=history, tolerance=0.5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(contenders, again))
    smaller = race_contenders(result.space, point["genome"], 4, history=history, macs_ratio=0.8 * macs, seed=0)
    for source, genome in smaller[1:]:  # the others keep to the size asked for
        genome_macs = float(result.space.cost(genome[None, :])["macs_ratio"][0])
        assert genome_macs <= 0.8 * macs + 1e-9 if source == "search_neighbor" else \
            abs(np.log(genome_macs / (0.8 * macs))) < 0.35
    # a screened candidate's accuracy is only an upper bound: never taken as a neighbor
    largest = history.sort_values("macs_ratio").iloc[-1]
    many = [g for s, g in race_contenders(result.space, largest["genome"], 12, history=history, tolerance=0.9,
                                           tilts=()) if s == "search_neighbor"]
    assert len(many) >= 2
    marked = history.copy()
    first = next(i for i, x in marked["genome"].items() if np.array_equal(np.asarray(x), many[0]))
    marked.loc[first, "screened"] = True
    others = [g for s, g in race_contenders(result.space, largest["genome"], 12, history=marked, tolerance=0.9,
                                             tilts=()) if s == "search_neighbor"]
    assert others and not any(np.array_equal(g, many[0]) for g in others)
    with pytest.raises(MopruneValueError, match="tolerance"):
        race_contenders(result.space, point["genome"], 3, tolerance=1.0)
    with pytest.raises(MopruneValueError, match="macs_ratio"):
        race_contenders(result.space, point["genome"], 3, macs_ratio=0.0)


@pytest.mark.slow
def test_successive_halving_keeps_the_better_half_each_round(searched):
    from moprune.race import race_contenders, successive_halving

    data, model, result = searched
    point = moprune.pareto_front(result).sort_values("macs_ratio").iloc[-1]
    contenders = race_contenders(result.space, point["genome"], 4, seed=1)
    winner, rounds = successive_halving(result.space, contenders, data=data, budget_steps=8, batch_size=64, lr=0.01)
    assert list(rounds.groupby("round")["contender"].count()) == [4, 2]
    assert list(rounds.groupby("round")["steps"].first()) == [2, 4]  # each round about one budget
    first = rounds[rounds["round"] == 0].sort_values(["val_accuracy", "contender"], ascending=[False, True])
    assert set(rounds[rounds["round"] == 1]["contender"]) == set(first["contender"].iloc[:2])
    last = rounds[rounds["round"] == 1]
    assert winner == int(last.sort_values(["val_accuracy", "contender"], ascending=[False, True])["contender"].iloc[0])
    again, _ = successive_halving(result.space, contenders, data=data, budget_steps=8, batch_size=64, lr=0.01)
    assert again == winner


@pytest.mark.slow
def test_retrain_front_race_keeps_the_better_of_the_winner_and_the_uniform_twin(searched):
    data, model, result = searched
    options = dict(data=data, base_model=model, n_points=2, epochs=1, batch_size=64)
    raced = retrain_front(result, race=4, **options)
    assert (raced["race_contenders"] == 4).all()
    assert set(raced["source"]) <= {"search", "params_tilt", "search_neighbor", "random", "uniform"}
    assert np.allclose(raced["accuracy"], np.maximum(raced["search_model_accuracy"], raced["uniform_accuracy"]))
    rounds = pd.DataFrame(raced.attrs["race_rounds"])
    assert set(rounds["eval"]) == set(raced.index)
    budget = int(np.ceil(len(data.train) / 64))
    for _, point_rounds in rounds.groupby("eval"):  # two halving rounds of about one budget each
        assert list(point_rounds.groupby("round")["contender"].count()) == [4, 2]
        assert abs((point_rounds["steps"]).sum() - 2 * budget) <= 4
    with pytest.raises(MopruneValueError, match="race"):
        retrain_front(result, race=1, **options)


@pytest.mark.slow
def test_retrain_within_races_at_the_budget_and_never_keeps_a_model_above_it(searched, tmp_path):
    from moprune.operators.pruning import uniform_costs

    data, model, result = searched
    _, cost = uniform_costs(result.space)
    uniform_macs = np.sort(np.asarray(cost["macs_ratio"], dtype=float))
    budget = float(uniform_macs[len(uniform_macs) // 3]) * 1.01  # between two uniform models
    row = moprune.retrain_within(result, budget, data=data, base_model=model, race=4, epochs=1, batch_size=64,
                                 out_path=str(tmp_path / "kept.pt"))
    largest = float(uniform_macs[uniform_macs <= budget].max())
    assert row["uniform_macs_ratio"] == pytest.approx(largest, rel=1e-6)  # the largest uniform model within it
    assert row["macs_ratio"] <= budget
    assert row["race_contenders"] == 4
    assert row["accuracy"] == pytest.approx(max(row["finalist_accuracy"], row["uniform_accuracy"]))
    assert (row["source"] == "uniform") == (row["uniform_accuracy"] > row["finalist_accuracy"])
    frame = moprune.to_frame(result)
    fits = frame[(frame["macs_ratio"] <= largest) & ~frame["screened"].astype(bool)]
    assert row["eval"] == fits["accuracy"].idxmax()  # the search's most accurate candidate within it races first
    rounds = pd.DataFrame(row.attrs["race_rounds"])
    # 3 pruned contenders race (3 -> 1), the 1 decomposed one goes straight to the final
    assert list(rounds.groupby("round")["contender"].count()) == [3] and "decomposed" not in set(rounds["source"])
    assert len(row.attrs["finalists"]) == 2
    loaded = moprune.load(row["path"])
    rebuilt = row.attrs["space"].materialize(row["genome"])
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in rebuilt.parameters())
    assert row.attrs["finalists"][1]["source"] == "decomposed"  # 3 * race // 8 = 1 by default
    again = moprune.retrain_within(result, budget, data=data, base_model=model, race=4, epochs=1, batch_size=64)
    assert again["accuracy"] == row["accuracy"] and np.array_equal(again["genome"], row["genome"])  # seeded


def test_retrain_within_refuses_a_budget_below_every_uniform_model(searched):
    data, model, result = searched
    with pytest.raises(MopruneValueError, match="max_macs"):
        moprune.retrain_within(result, 1e-6, data=data, base_model=model)
    with pytest.raises(MopruneValueError, match="race"):
        moprune.retrain_within(result, 0.5, data=data, base_model=model, race=1)
    with pytest.raises(MopruneValueError, match="max_macs"):
        moprune.retrain_within(result, 1.5, data=data, base_model=model)


def test_decomposed_contenders_fit_the_size_and_come_most_accurate_first(searched):
    from moprune.race import DECOMPOSE_MIN_FILL, decomposed_contenders

    data, model, _ = searched
    size = 0.2
    space, chosen = decomposed_contenders(model, size, 3, data=data, draws=12, seed=0)
    assert isinstance(space, moprune.LowRankChannelSpace) and 1 <= len(chosen) <= 3
    genomes = np.stack([g for _, g in chosen])
    assert {source for source, _ in chosen} == {"decomposed"}
    macs = space.cost(genomes)["macs_ratio"]
    assert np.all(macs <= size * (1 + 1e-9)) and np.all(macs >= DECOMPOSE_MIN_FILL * size)
    assert any(rank for _, rank in space.decode(genomes[0]).kept[1][1])  # something is factorised, not only pruned
    evaluator = moprune.Evaluator(data.val, n_samples=1000, finetune=None, train_data=data.train,
                                  confirm_samples=None, seed=0)
    accuracy = [r.accuracy for r in evaluator.evaluate(space, genomes)]
    assert accuracy == sorted(accuracy, reverse=True)
    assert len({space.decode(g).key for g in genomes}) == len(genomes)  # distinct plans
    _, again = decomposed_contenders(model, size, 3, data=data, draws=12, seed=0)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(chosen, again))  # seeded
    with pytest.raises(MopruneValueError, match="draws"):
        decomposed_contenders(model, size, 3, data=data, draws=2)


@pytest.mark.slow
def test_retrain_within_races_decomposed_contenders_and_reports_their_space(searched, tmp_path):
    data, model, result = searched
    row = moprune.retrain_within(result, 0.2, data=data, base_model=model, race=4, decompose=2, epochs=1,
                                 batch_size=64, out_path=str(tmp_path / "kept.pt"))
    rounds = pd.DataFrame(row.attrs["race_rounds"])
    assert (rounds[rounds["round"] == 0]["source"] == "decomposed").sum() == 2
    # each family races on its own: two pruned and two decomposed contenders, one round each
    assert sorted(rounds["contender"]) == [0, 1, 2, 3] and set(rounds["round"]) == {0}
    finalists = row.attrs["finalists"]
    assert [f["source"] == "decomposed" for f in finalists] == [False, True]
    assert row["finalist_accuracy"] == max(f["val_accuracy"] for f in finalists)
    assert row["accuracy"] == pytest.approx(max(row["finalist_accuracy"], row["uniform_accuracy"]))
    assert row["race_contenders"] == 4 and row["macs_ratio"] <= 0.2
    space = row.attrs["space"]
    assert row["encoding"] == space.encoding
    assert (row["source"] == "decomposed") == isinstance(space, moprune.LowRankChannelSpace)
    rebuilt = space.materialize(row["genome"])
    loaded = moprune.load(row["path"])
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in rebuilt.parameters())
    with pytest.raises(MopruneValueError, match="decompose"):
        moprune.retrain_within(result, 0.2, data=data, base_model=model, race=4, decompose=4)
