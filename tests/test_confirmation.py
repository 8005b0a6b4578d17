"""Confirmation images: candidates that could enter the front are measured on a second validation subset."""

import numpy as np
import pytest
import torch
from pymoo.termination.max_gen import MaximumGenerationTermination

import moprune
from conftest_search import Interrupt, TinySpace, interrupt_after, make_data, random_genomes, tiny_model
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneValueError
from moprune.problem import FocusedProblem, PruningProblem
from moprune.results import pareto_front, to_frame
from moprune.runs.evaluations import archive_from_frame, records_from_frame
from moprune.train import evaluate

N_SUBSET, N_CONFIRM = 200, 200


def _evaluator(**kwargs):
    return Evaluator(make_data(600, seed=2), n_samples=N_SUBSET, confirm_samples=N_CONFIRM, batch_size=100,
                     num_threads=1, **kwargs)


def _genomes(seed=0, n=8):
    return random_genomes(seed, n, low=0.3)


def _keys(data):
    return {tuple(x.tolist()) for x in data.tensors[0]}


def test_confirmation_images_are_disjoint_from_the_subset_and_fixed_by_the_seed():
    ev = _evaluator()
    val, confirm = ev.val_subset, ev.confirm_subset
    assert len(val) == N_SUBSET and len(confirm) == N_CONFIRM
    assert not _keys(val) & _keys(confirm)
    again = _evaluator()
    assert _keys(again.confirm_subset) == _keys(confirm)
    # the next images of the same seeded order: a larger subset holds both
    larger = Evaluator(make_data(600, seed=2), n_samples=N_SUBSET + N_CONFIRM)
    assert _keys(larger.val_subset) == _keys(val) | _keys(confirm)


def test_confirm_samples_is_checked_by_name():
    data = make_data(300, seed=2)
    with pytest.raises(MopruneValueError, match="confirm_samples"):
        Evaluator(data, n_samples=200, confirm_samples=101)  # only 100 images outside the subset
    with pytest.raises(MopruneValueError, match="n_samples"):
        Evaluator(data, n_samples=None, confirm_samples=50)
    with pytest.raises(MopruneValueError, match="confirm_samples"):
        Evaluator(data, n_samples=100, confirm_samples=0)
    with pytest.raises(MopruneValueError, match="confirm_samples"):
        Evaluator(data, n_samples=100, confirm_samples=None).evaluate_model(tiny_model(), confirmation=True)
    with pytest.raises(MopruneValueError, match="confirm_samples"):
        Evaluator(data, n_samples=100, confirm_samples="more")


def test_confirm_samples_auto_takes_as_many_again_when_the_data_hold_them():
    data = make_data(300, seed=2)
    assert Evaluator(data, n_samples=150).confirm_samples == 150
    assert len(Evaluator(data, n_samples=150).confirm_subset) == 150
    assert Evaluator(data, n_samples=151).confirm_samples is None  # 149 left: fewer than the subset
    assert Evaluator(data, n_samples=None).confirm_samples is None
    assert Evaluator(data, n_samples=151).confirm_subset is None


def test_a_candidate_within_its_limit_is_measured_on_both_subsets():
    ev = _evaluator()
    space = TinySpace(tiny_model())
    plan = space.decode(_genomes(3)[1])
    model = space.materialize(plan)
    on_subset = evaluate(model, ev.val_subset, batch_size=100)
    on_confirm = evaluate(model, ev.confirm_subset, batch_size=100)
    errors = int(round((1 - on_subset) * N_SUBSET))
    confirmed = ev.run(space, plan, confirm_limit=errors)
    assert confirmed.accuracy == pytest.approx(on_subset)
    assert confirmed.confirmed_accuracy == pytest.approx((on_subset + on_confirm) / 2)
    assert ev.run(space, plan, confirm_limit=errors - 1).confirmed_accuracy is None  # beyond its limit
    assert ev.run(space, plan).confirmed_accuracy is None
    base = ev.evaluate_model(tiny_model(), confirmation=True)
    assert base == pytest.approx((evaluate(tiny_model(), ev.val_subset) + evaluate(tiny_model(), ev.confirm_subset)) / 2)


def test_confirmation_stops_at_the_pooled_bound_and_marks_the_record_screened():
    ev = _evaluator()
    space = TinySpace(tiny_model())
    plan = space.decode(_genomes(5)[2])
    full = ev.run(space, plan, confirm_limit=N_SUBSET)
    pooled_errors = int(round((1 - full.confirmed_accuracy) * (N_SUBSET + N_CONFIRM)))
    assert pooled_errors > int(round((1 - full.accuracy) * N_SUBSET))  # some errors on the confirmation images
    stopped = ev.run(space, plan, confirm_limit=N_SUBSET, max_pooled_errors=pooled_errors - 1)
    assert stopped.screened and stopped.accuracy == pytest.approx(full.accuracy)
    assert stopped.confirmed_accuracy >= full.confirmed_accuracy  # an upper bound
    loose = ev.run(space, plan, confirm_limit=N_SUBSET, max_pooled_errors=pooled_errors)
    assert not loose.screened and loose.confirmed_accuracy == pytest.approx(full.confirmed_accuracy)


def test_a_cached_unconfirmed_record_is_measured_again_when_its_limit_asks():
    ev = _evaluator()
    space = TinySpace(tiny_model())
    X = _genomes(1, n=2)
    first = ev.evaluate(space, X)
    assert all(r.confirmed_accuracy is None for r in first)
    again = ev.evaluate(space, X, confirm_limits=[N_SUBSET, None])
    assert again[0].confirmed_accuracy is not None and not again[0].cached
    assert again[1].cached and again[1].confirmed_accuracy is None
    served = ev.evaluate(space, X[:1], confirm_limits=[N_SUBSET])[0]
    assert served.cached and served.confirmed_accuracy == again[0].confirmed_accuracy


def _confirming_problem(confirm_drop=100.0, screen=True):
    problem = PruningProblem(TinySpace(tiny_model()), _evaluator())
    return FocusedProblem(problem, None, screen=screen, confirm=True, confirm_drop=confirm_drop)


@pytest.mark.parametrize("screen", [True, False])
def test_front_entrants_are_confirmed_and_scored_on_the_base_models_scale(screen):
    view = _confirming_problem(screen=screen)
    problem = view.parent
    for generation, seed in enumerate(range(3)):
        problem.generation = generation
        view.evaluate(_genomes(seed))
    archive = problem.archive
    confirmed = [e for e in archive if e.confirmed and not e.screened]
    assert confirmed and any(not e.confirmed for e in archive)
    shift = problem.base_accuracy - problem.base_accuracy_confirmed
    for e in confirmed:  # the drop from the base is the one measured on both subsets
        assert e.accuracy == pytest.approx(e.confirmed_accuracy + shift)
        assert 100 * (problem.base_accuracy - e.accuracy) == pytest.approx(
            100 * (problem.base_accuracy_confirmed - e.confirmed_accuracy))
    for e in archive:
        if not e.confirmed:
            assert e.accuracy == e.subset_accuracy
    # an unconfirmed, fully measured candidate was beaten on the subset by a model at most as costly of an
    # earlier generation (with screening, it stopped there)
    n = N_SUBSET
    unconfirmed = [e for e in archive if not e.confirmed and not e.screened]
    assert not unconfirmed if screen else unconfirmed
    for e in unconfirmed + [e for e in archive if e.screened and not e.confirmed]:
        assert any(d.generation < e.generation and (d.confirmed or not d.screened)
                   and d.macs_ratio <= e.macs_ratio
                   and round((1 - d.accuracy_on_subset) * n) < round((1 - e.subset_accuracy) * n) for d in archive)


def test_only_candidates_within_confirm_drop_are_confirmed():
    view = _confirming_problem(confirm_drop=0.0, screen=False)
    view.evaluate(_genomes(0, n=12))
    base = view.parent.base_accuracy
    for e in view.parent.archive:
        if e.confirmed:
            assert e.subset_accuracy >= base - 1e-12
    assert any(e.subset_accuracy < base and not e.confirmed for e in view.parent.archive)


def test_confirmation_survives_a_run_directory_and_screened_rows_never_reach_the_front():
    view = _confirming_problem()
    problem = view.parent
    for generation, seed in enumerate(range(3)):
        problem.generation = generation
        view.evaluate(_genomes(seed))
    result = moprune.SearchResult.from_problem(problem, algorithm="test", seed=0)
    df = to_frame(result)
    assert df["confirmed"].any() and (df["confirmed"] == [e.confirmed for e in problem.archive]).all()
    rebuilt = archive_from_frame(df, problem.objectives)
    for a, b in zip(rebuilt, problem.archive):
        assert a.confirmed == b.confirmed and a.screened == b.screened
        np.testing.assert_allclose([a.subset_accuracy, a.confirmed_accuracy], [b.subset_accuracy, b.confirmed_accuracy])
    records = {r.plan_key: r for r in records_from_frame(df)}
    cache = problem.evaluator.cache
    for key, record in records.items():  # the evaluator's own records come back
        assert record.accuracy == pytest.approx(cache.get(key).accuracy)
        assert (record.confirmed_accuracy is None) == (cache.get(key).confirmed_accuracy is None)
    front = pareto_front(df)
    assert not front["screened"].any()
    df.loc[df.index[0], "screened"] = True  # the base-like first genome: best accuracy, all MACs
    assert df.index[0] not in pareto_front(df).index


def _confirmed_search(**evaluator_kwargs):
    problem = PruningProblem(TinySpace(tiny_model()), _evaluator(**evaluator_kwargs))
    result = moprune.search(problem, n_evals=40, seed=1)
    return [(e.plan_key, e.screened, e.confirmed, e.accuracy, e.confirmed_accuracy) for e in result.archive]


def test_the_default_search_confirms_the_same_candidates_on_workers():
    local = _confirmed_search()
    assert sum(c for _, _, c, _, _ in local) >= 3  # the default search confirms when the evaluator can
    np.testing.assert_equal(_confirmed_search(workers=2), local)


# ------------------------------------------------------------- confirmation sized to the budget
def _auto_evaluator(n_data=1000, **kwargs):
    return Evaluator(make_data(n_data, seed=2), n_samples=100, batch_size=100, num_threads=1, **kwargs)


def test_fit_confirmation_takes_three_times_the_images_from_1000_evaluations():
    ev = _auto_evaluator()
    small = ev.confirm_subset
    assert len(small) == 100 and ev.confirm_pool == 300
    assert ev.fit_confirmation(None) == ev.fit_confirmation(999) == 100
    assert ev.fit_confirmation(1000) == 300 and len(ev.confirm_subset) == 300
    large = ev.confirm_subset
    assert _keys(small) < _keys(large) and not _keys(large) & _keys(ev.val_subset)
    # the same images, in the same order, as asking for 300 from the start
    fixed = _auto_evaluator(confirm_samples=300)
    for a, b in zip(large.tensors, fixed.confirm_subset.tensors):
        assert torch.equal(a, b)
    assert fixed.fit_confirmation(300) == fixed.fit_confirmation(5000) == 300  # an explicit number stays
    assert _auto_evaluator(confirm_samples=None).fit_confirmation(5000) is None
    assert _auto_evaluator(n_data=350).fit_confirmation(1000) == 250  # as many as the data hold
    assert ev.fit_confirmation(10) == 100 and torch.equal(ev.confirm_subset.tensors[0], small.tensors[0])
    with pytest.raises(MopruneValueError, match="n_evals"):
        ev.fit_confirmation(0)


def test_records_confirmed_on_other_images_are_measured_again_and_the_base_follows():
    ev = _auto_evaluator()
    problem = PruningProblem(TinySpace(tiny_model()), ev)
    space, X = problem.space, _genomes(1, n=2)
    first = ev.evaluate(space, X, confirm_limits=[100, 100])
    assert [r.confirm_images for r in first] == [100, 100]
    base_small = problem.base_accuracy_confirmed
    assert base_small == pytest.approx(ev.evaluate_model(tiny_model(), confirmation=True))
    ev.fit_confirmation(1000)
    again = ev.evaluate(space, X, confirm_limits=[100, None])
    assert [r.cached for r in again] == [False, False] and [r.confirm_images for r in again] == [300, None]
    assert problem.base_accuracy_confirmed == pytest.approx(ev.evaluate_model(tiny_model(), confirmation=True))
    model = space.materialize(space.decode(X[0]))
    expected = (evaluate(model, ev.val_subset) * 100 + evaluate(model, ev.confirm_subset) * 300) / 400
    assert again[0].confirmed_accuracy == pytest.approx(expected)
    served = ev.evaluate(space, X[:1], confirm_limits=[100])[0]
    assert served.cached and served.confirmed_accuracy == again[0].confirmed_accuracy


def test_the_default_search_sizes_its_confirmation_to_its_budget():
    confirmed = {}
    for budget in (999, 1000):
        problem = PruningProblem(TinySpace(tiny_model()), _auto_evaluator())
        with pytest.raises(Interrupt):
            moprune.search(problem, n_evals=budget, seed=1, callbacks=[interrupt_after(1)])
        confirmed[budget] = {e.confirm_images for e in problem.archive if e.confirmed}
        assert problem.evaluator.confirm_samples == (300 if budget >= 1000 else 100)
    assert confirmed == {999: {100}, 1000: {300}}
    algorithm = moprune.algorithms.ALGORITHMS.get("focused")(PruningProblem(TinySpace(tiny_model()),
                                                                            _auto_evaluator()), pop_size=20)
    for n_gen, images in ((49, 100), (50, 300)):  # 20 + 49 x 20 = 1,000 evaluations
        algorithm.termination = MaximumGenerationTermination(n_gen)
        assert algorithm.budget() == 20 + (n_gen - 1) * 20
        algorithm.moprune_problem.evaluator.fit_confirmation(algorithm.budget())
        assert algorithm.moprune_problem.evaluator.confirm_samples == images


def test_a_resumed_run_confirms_on_the_same_images_and_keeps_its_cache(tmp_path, monkeypatch):
    from moprune.runs import prepare_run, read_evaluations, run_search

    monkeypatch.setenv("MOPRUNE_CACHE", str(tmp_path / "cache"))

    path = tmp_path / "run"
    prepare_run(path, {"model": "tiny"})
    with pytest.raises(Interrupt):
        run_search(path, PruningProblem(TinySpace(tiny_model()), _auto_evaluator()), "focused", pop_size=10,
                   n_evals=1000, seed=1, callbacks=[interrupt_after(1)])
    before = read_evaluations(path, decode=False)
    assert set(before.loc[before["confirmed"], "confirm_images"]) == {300}
    problem = PruningProblem(TinySpace(tiny_model()), _auto_evaluator())
    with pytest.raises(Interrupt):
        run_search(path, problem, "focused", pop_size=10, n_evals=1000, seed=1, resume=True,
                   callbacks=[interrupt_after(3)])
    after = read_evaluations(path, decode=False)
    assert len(after) > len(before) and set(after.loc[after["confirmed"], "confirm_images"]) == {300}
    assert problem.evaluator.confirm_samples == 300
    # the checkpoint's counters and cache came back: no candidate of the first part was run again
    assert problem.evaluator.n_evaluated == int((~after["cached"]).sum())
    assert not set(after["plan_key"][len(before):][~after["cached"][len(before):]]) & set(before["plan_key"])
