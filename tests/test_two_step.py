"""Document 001's two-step framework with real elite retraining, and the spaces' ``rebase``."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest import randomized_zoo_model
from conftest_search import tiny_problem
from moprune.algorithms import ALGORITHMS
from moprune.evaluation import Evaluator
from moprune.exceptions import MopruneValueError
from moprune.problem import PruningProblem
from moprune.searching import search
from moprune.space import ChannelSpace, WeightSpace

# ---------------------------------------------------------------------------- rebase: exact write-back


def _perturb(model, seed, masks=None):
    """Stand-in for retraining: add noise to every parameter and BN statistic (pruned weights stay 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g) * 0.1
            t.copy_(t.abs() + 0.5 if name.endswith("running_var") else t + noise)
        for layer, mask in (masks or {}).items():
            model.get_submodule(layer).weight.mul_(mask.to(torch.float32))
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet8"])
@pytest.mark.parametrize("encoding", ["binary", "ratio"])
def test_channel_rebase_materializes_the_retrained_model_exactly(name, encoding):
    model = randomized_zoo_model(name)
    space = ChannelSpace(model, torch.zeros(1, *model.input_shape), encoding=encoding)
    before = _state(model)
    rng = np.random.default_rng(0)
    x = rng.random(space.n_var) < 0.5 if encoding == "binary" else rng.uniform(0.2, 0.8, space.n_var)
    plan = space.decode(x)
    retrained = _perturb(space.materialize(x), seed=1)
    rebased = space.rebase(retrained, x)
    inputs = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_outputs(rebased.materialize(x), inputs), _outputs(retrained, inputs),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(_outputs(rebased.materialize(plan), inputs), _outputs(retrained, inputs),
                               rtol=0, atol=1e-5)
    # the old space and its model are untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert rebased.model is not model and space.model is model
    # the first group's root: kept filters retrained, removed ones as before
    root = space.group_names[0]
    kept = list(dict(plan.kept)[root])
    removed = sorted(set(range(space.group_sizes[0])) - set(kept))
    assert removed
    new_w, old_w = rebased.model.get_submodule(root).weight, model.get_submodule(root).weight
    assert torch.equal(new_w[removed], old_w[removed])
    assert not torch.equal(new_w[kept], old_w[kept])
    # same genes, ranking, plans and costs: a genome keeps its meaning
    X = np.asarray(space.repair().do(None, _population(space, rng)).get("X"))
    assert [rebased.decode(g).key for g in X] == [space.decode(g).key for g in X]
    for k, v in space.cost(X).items():
        np.testing.assert_array_equal(rebased.cost(X)[k], v)
    assert (rebased.n_var, rebased.group_names, rebased.encoding) == (space.n_var, space.group_names, encoding)
    # and it pickles with its own model
    again = pickle.loads(pickle.dumps(rebased))
    torch.testing.assert_close(_outputs(again.materialize(x), inputs), _outputs(retrained, inputs), rtol=0, atol=1e-5)


def _population(space, rng, n=6):
    from pymoo.core.population import Population

    X = rng.random((n, space.n_var))
    return Population.new("X", X < 0.5 if space.vtype is bool else X)


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet8"])
@pytest.mark.parametrize("encoding", ["ratio", "mask"])
def test_weight_rebase_materializes_the_retrained_model_exactly(name, encoding):
    model = randomized_zoo_model(name)
    space = WeightSpace(model, torch.zeros(1, *model.input_shape), encoding=encoding)
    before = _state(model)
    rng = np.random.default_rng(0)
    x = rng.random(space.n_var) < 0.5 if encoding == "mask" else rng.uniform(0.2, 0.8, space.n_var)
    masks = space.masks(x)
    retrained = _perturb(space.materialize(x), seed=1, masks=masks)
    rebased = space.rebase(retrained, space.decode(x))
    inputs = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_outputs(rebased.materialize(x), inputs), _outputs(retrained, inputs),
                               rtol=0, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    layer = space.group_names[0]
    new_w, old_w, mask = rebased.model.get_submodule(layer).weight, model.get_submodule(layer).weight, masks[layer]
    assert torch.equal(new_w[~mask], old_w[~mask])  # pruned weights keep their values
    assert torch.equal(new_w[mask], retrained.get_submodule(layer).weight[mask])
    X = np.asarray(_population(space, rng).get("X"))
    assert [rebased.decode(g).key for g in X] == [space.decode(g).key for g in X]
    for a, b in zip(rebased.masks(X[0]).values(), space.masks(X[0]).values()):
        assert torch.equal(a, b)  # the magnitude ranking is the original one


def test_rebase_rejects_a_model_of_another_shape():
    model = randomized_zoo_model("mnist_cnn")
    space = ChannelSpace(model, torch.zeros(1, *model.input_shape))
    x = np.ones(space.n_var, dtype=bool)
    x[: space.group_sizes[0] // 2] = False
    with pytest.raises(MopruneValueError, match="pruned_model"):
        space.rebase(space.materialize(np.ones(space.n_var, dtype=bool)), x)
    weights = WeightSpace(model, torch.zeros(1, *model.input_shape))
    with pytest.raises(MopruneValueError, match="pruned_model"):
        weights.rebase(nn.Linear(2, 2), weights.original())


# ---------------------------------------------------------------------------- two_step with retraining

IN, HIDDEN, OUT = 6, 16, 3


def _data(n, seed):
    """Linearly separable 3-class data (a fixed random teacher)."""
    w = torch.randn(IN, OUT, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, IN, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x @ w).argmax(1))


def _random_mlp():
    """A randomly initialised (untrained) MLP: fine-tuning helps a lot."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # test-only: a fixed model
        return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                             nn.Linear(HIDDEN, OUT)).eval()


def _problem(*, kind="channels", encoding="binary", train=True, max_accuracy_drop=None):
    model = _random_mlp()
    if kind == "channels":
        space = ChannelSpace(model, torch.zeros(1, IN), encoding=encoding)
    else:
        space = WeightSpace(model, torch.zeros(1, IN), encoding=encoding)
    evaluator = Evaluator(_data(300, seed=2), n_samples=None, train_data=_data(1000, seed=1) if train else None,
                          num_threads=1, finetune=None)  # the elite's retraining, no fine-tuning per candidate
    return PruningProblem(space, evaluator, objectives=("error", "macs"), max_accuracy_drop=max_accuracy_drop)


def _run(problem, **options):
    ran = []
    options.setdefault("retrain_steps", 60)
    options.setdefault("retrain_lr", 0.1)
    result = search(problem, "two_step", pop_size=6, seed=options.pop("seed", 0),
                    callbacks=[lambda algorithm, _: ran.append(algorithm)], **options)
    return result, ran[-1]


def _same(a, b):
    return len(a.archive) == len(b.archive) and all(
        np.array_equal(x.genome, y.genome) and x.objectives == y.objectives and x.accuracy == y.accuracy
        for x, y in zip(a.archive, b.archive))


@pytest.mark.slow
def test_retraining_rebases_the_space_and_improves_the_elite():
    problem = _problem()
    original_space = problem.space
    original_accuracy = problem.evaluator.evaluate_model(original_space.model)
    result, algorithm = _run(problem, n_gen=6, n_rounds=2)
    assert algorithm.round == 1 and len(algorithm.elites) == 1 and len(algorithm.retrain_losses) == 1
    # the problem (and so the result) now searches the rebased space; the original is untouched
    assert problem.space is not original_space and result.space is problem.space
    assert algorithm.problem.space is problem.space
    assert original_space.model is not problem.space.model
    # drops stay measured against the original model
    assert result.base_accuracy == problem.base_accuracy == original_accuracy
    # generation 3 starts round 2: the elite evaluated again, on the new weights, plus 5 perturbations
    elite = algorithm.elites[0]
    seeded = [e for e in result.archive if e.generation == 3]
    assert len(seeded) == 6
    again = [e for e in seeded if np.array_equal(e.genome, elite)]
    assert len(again) == 1 and not again[0].cached  # the cache was cleared
    before = [e for e in result.archive if e.generation < 3 and np.array_equal(e.genome, elite)][-1]
    assert again[0].accuracy > before.accuracy + 0.05, (before.accuracy, again[0].accuracy)
    # and that accuracy is the rebased space's model at the elite
    assert again[0].accuracy == problem.evaluator.accuracy(problem.space.materialize(elite))
    assert result.n_evals == 6 * 6
    # the problem still pickles (checkpoints): the rebased model travels in the space
    restored = pickle.loads(pickle.dumps(problem))
    for k, v in problem.space.model.state_dict().items():
        assert torch.equal(restored.space.model.state_dict()[k], v)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"n_rounds": 3}, {"n_rounds": 2, "inner": "ga"}], ids=["nsga2", "ga"])
def test_retraining_budget_is_exact_and_deterministic(options):
    runs = [_run(_problem(), n_evals=41, seed=s, **options) for s in (5, 5, 6)]
    (a, algo_a), (b, algo_b), (c, _) = runs
    assert a.n_evals == b.n_evals == c.n_evals == 41
    assert len(algo_a.retrain_losses) == options["n_rounds"] - 1
    assert algo_a.retrain_losses == algo_b.retrain_losses
    assert _same(a, b) and not _same(a, c)
    for k, v in a.space.model.state_dict().items():
        assert torch.equal(b.space.model.state_dict()[k], v)
    if options.get("inner") == "ga":  # the scalarized view searches the rebased space too
        assert algo_a.problem.space is a.space


@pytest.mark.slow
def test_retraining_does_not_touch_global_torch_rng():
    state = torch.random.get_rng_state()
    _run(_problem(), n_evals=20)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow
def test_retraining_a_weight_space_keeps_pruned_weights_zero():
    problem = _problem(kind="weights", encoding="ratio")
    result, algorithm = _run(problem, n_evals=30)
    assert result.n_evals == 30 and len(algorithm.retrain_losses) == 1
    elite = algorithm.elites[0]
    pruned = problem.space.materialize(elite)
    for name, mask in problem.space.masks(elite).items():
        w = pruned.get_submodule(name).weight
        assert torch.all(w[~mask] == 0)
        # kept weights were retrained, pruned ones kept their original values in the base model
        old = _random_mlp().get_submodule(name).weight
        assert torch.equal(problem.space.model.get_submodule(name).weight[~mask], old[~mask])
        if mask.any():
            assert not torch.equal(w[mask], old[mask])


def test_default_retrain_steps():
    with_data = ALGORITHMS.get("two_step")(_problem(), pop_size=6)
    assert with_data.retrain_steps == 100 and with_data.retrain_lr == 0.01 and with_data.retrain_batch_size == 128
    assert ALGORITHMS.get("two_step")(_problem(train=False), pop_size=6).retrain_steps == 0
    # a space without rebase (the fake MLP space) is not retrained by default
    assert ALGORITHMS.get("two_step")(tiny_problem(train_data=_tiny_train()), pop_size=6).retrain_steps == 0


def _tiny_train():
    from conftest_search import make_data

    return make_data(200, seed=5)


def test_without_retraining_the_weights_never_change():
    problem = _problem()
    space = problem.space
    result, algorithm = _run(problem, n_gen=4, retrain_steps=0)
    assert problem.space is space and result.space is space and algorithm.retrain_losses == []


@pytest.mark.parametrize("option, value", [
    ("retrain_steps", -1),
    ("retrain_steps", 2.5),
    ("retrain_steps", True),
    ("retrain_lr", 0.0),
    ("retrain_lr", "fast"),
    ("retrain_batch_size", 0),
])
def test_bad_retrain_options_name_the_argument(option, value):
    with pytest.raises(MopruneValueError) as info:
        ALGORITHMS.get("two_step")(_problem(), pop_size=6, **{option: value})
    message = str(info.value)
    assert option in message and repr(value) in message


def test_retraining_needs_train_data_and_a_rebasable_space():
    with pytest.raises(MopruneValueError, match="train_data.*Evaluator"):
        ALGORITHMS.get("two_step")(_problem(train=False), pop_size=6, retrain_steps=5)
    with pytest.raises(MopruneValueError, match="retrain_steps.*rebase"):
        ALGORITHMS.get("two_step")(tiny_problem(train_data=_tiny_train()), pop_size=6, retrain_steps=5)


def test_channel_rebase_keeps_the_original_ranking():
    problem = _problem(encoding="ratio")
    space = problem.space
    x = np.full(space.n_var, 0.5)
    rebased = space.rebase(_perturb(space.materialize(x), seed=3), x)
    assert {k: v.tolist() for k, v in rebased.importance_scores.items()} == \
        {k: v.tolist() for k, v in space.importance_scores.items()}
    assert rebased.decode(np.full(space.n_var, 0.25)).kept == space.decode(np.full(space.n_var, 0.25)).kept
    copy.deepcopy(rebased)  # deep-copies like any space


class _RefPickler(pickle.Pickler):
    """Pickles the problem as a reference, as checkpoints of a run directory do."""

    def __init__(self, file, problem):
        super().__init__(file)
        self.problem = problem

    def persistent_id(self, obj):
        return "problem" if obj is self.problem else None


class _RefUnpickler(pickle.Unpickler):
    def __init__(self, file, problem):
        super().__init__(file)
        self.problem = problem

    def persistent_load(self, pid):
        return self.problem


@pytest.mark.slow
def test_resume_from_a_checkpoint_restores_the_retrained_weights():
    import io

    full, _ = _run(_problem(), n_gen=6, n_rounds=2)
    saved = {}

    def checkpoint(algorithm, problem):
        if problem.generation == 4:  # inside round 2, after the retraining
            buffer = io.BytesIO()
            _RefPickler(buffer, problem).dump(algorithm)
            saved.update(algorithm=buffer.getvalue(), archive=list(problem.archive))

    search(_problem(), "two_step", pop_size=6, n_gen=6, seed=0, retrain_steps=60, retrain_lr=0.1,
           callbacks=[checkpoint])
    fresh = _problem()  # rebuilt from scratch: the original weights
    algorithm = _RefUnpickler(io.BytesIO(saved["algorithm"]), fresh).load()
    resumed = search(fresh, "two_step", n_gen=6, seed=0, resume={"algorithm": algorithm, "archive": saved["archive"]})
    assert _same(full, resumed)
    assert resumed.base_accuracy == full.base_accuracy
    for k, v in full.space.model.state_dict().items():
        assert torch.equal(resumed.space.model.state_dict()[k], v), k


class _BrokenSpace(ChannelSpace):
    def materialize(self, x_or_plan):
        raise RuntimeError("broken on purpose")


def test_a_failed_elite_is_not_retrained():
    problem = _problem()
    space = _BrokenSpace(problem.space.model, torch.zeros(1, IN))
    problem = PruningProblem(space, problem.evaluator, objectives=("error", "macs"))
    result, algorithm = _run(problem, n_gen=4)
    assert algorithm.round == 1 and algorithm.retrain_losses == []
    assert problem.space is space and result.n_evals == 4 * 6 - 1  # the elite was carried over
    assert all(e.error is not None for e in result.archive)
