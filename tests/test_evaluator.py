"""Evaluator: fixed subset, cache keyed by plan, counters, failures, fine-tuning, BN re-estimation."""

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest_search import H1, H2, TinySpace, make_data, make_mlp, tiny_model
from moprune.evaluation import AUTO_FINETUNE, EvalRecord, EvaluationCache, Evaluator, has_batchnorm, plan_seed
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.space.base import Plan
from moprune.train import evaluate

VAL = make_data(400, seed=2)
TRAIN = make_data(600, seed=3)


def _genomes(seed, n):
    rng = np.random.default_rng(seed)
    X = rng.random((n, H1 + H2)) < 0.6
    X[:, 0] = X[:, H1] = True
    return X


class AliasSpace(TinySpace):
    """The last bit is ignored: genomes that differ only there decode to the same plan."""

    def decode(self, x):
        x = np.array(self.check_genome(x), dtype=bool)
        x[-1] = True
        return super().decode(x)


class NaNSpace(TinySpace):
    """Materialized models output NaN."""

    def materialize(self, x_or_plan):
        model = super().materialize(x_or_plan)
        with torch.no_grad():
            model[0].weight.fill_(float("nan"))
        return model


class DropoutSpace(TinySpace):
    """Materialized models have a dropout layer (randomness from torch's global generator)."""

    def materialize(self, x_or_plan):
        model = super().materialize(x_or_plan)
        return nn.Sequential(model[0], nn.Dropout(0.3), *list(model)[1:]).eval()


def test_fixed_seeded_subset_and_accuracy():
    ev = Evaluator(VAL, n_samples=100, batch_size=30, seed=5, num_threads=1)
    again = Evaluator(VAL, n_samples=100, seed=5)
    other = Evaluator(VAL, n_samples=100, seed=6)
    assert len(ev.val_subset) == 100
    assert torch.equal(ev.val_subset.tensors[0], again.val_subset.tensors[0])
    assert not torch.equal(ev.val_subset.tensors[0], other.val_subset.tensors[0])
    model = tiny_model()
    assert ev.evaluate_model(model) == pytest.approx(evaluate(model, ev.val_subset))
    assert torch.equal(Evaluator(VAL, n_samples=None).val_subset.tensors[0], VAL.tensors[0])  # None: all of it
    assert len(Evaluator(VAL, n_samples=5000).val_subset) == 400


def test_records_match_direct_evaluation():
    space = TinySpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, num_threads=1)
    X = _genomes(0, 4)
    records = ev.evaluate(space, X)
    assert [type(r) for r in records] == [EvalRecord] * 4
    for x, r in zip(X, records):
        assert r.accuracy == pytest.approx(evaluate(space.materialize(x), VAL))
        assert r.plan_key == space.decode(x).key and not r.cached and r.seconds > 0 and r.error is None


def test_cache_is_keyed_by_plan_and_counters_add_up():
    space = AliasSpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, num_threads=1)
    X = _genomes(1, 5)
    twin = X.copy()
    twin[:, -1] = ~twin[:, -1]  # different genomes, same plans
    records = ev.evaluate(space, np.vstack([X, twin, X[:2]]))
    assert space.n_materialized == 5
    assert ev.n_evaluated == 5 and ev.n_cached == 7 and ev.n_evaluated + ev.n_cached == 12
    assert [r.cached for r in records] == [False] * 5 + [True] * 7
    assert [r.accuracy for r in records[5:10]] == [r.accuracy for r in records[:5]]
    assert all(r.seconds == 0.0 for r in records[5:])
    assert len(ev.cache) == 5
    ev.reset_counters()
    assert ev.counters() == {"n_evaluated": 0, "n_cached": 0, "n_failed": 0}


def test_duplicates_inside_one_population_run_once():
    space = TinySpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, num_threads=1)
    x = _genomes(2, 1)
    records = ev.evaluate(space, np.repeat(x, 4, axis=0))
    assert space.n_materialized == 1 and [r.cached for r in records] == [False, True, True, True]


def test_cache_off_runs_everything():
    space = TinySpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, cache=False, num_threads=1)
    ev.evaluate(space, np.repeat(_genomes(2, 1), 3, axis=0))
    assert space.n_materialized == 3 and ev.n_evaluated == 3 and ev.n_cached == 0


def test_cache_size_limit_and_state_dict():
    cache = EvaluationCache(max_size=2)
    for k in "abc":
        cache.put(EvalRecord(plan_key=k, accuracy=0.5))
    assert len(cache) == 2 and "a" not in cache and cache.get("c").accuracy == 0.5
    restored = EvaluationCache()
    restored.load_state_dict(pickle.loads(pickle.dumps(cache.state_dict())))
    assert list(restored._records) == ["b", "c"] and restored.max_size == 2
    with pytest.raises(MopruneValueError, match="max_size must be None or an int >= 1; got 0"):
        EvaluationCache(max_size=0)


def test_exception_is_recorded_and_cached():
    space = TinySpace(tiny_model(), fail_if=lambda plan: len(plan.kept[1][1]) < 20)
    ev = Evaluator(VAL, n_samples=None, num_threads=1)
    X = np.ones((3, H1 + H2), dtype=bool)
    X[1, H1 + 10:] = False
    X[2, :5] = False
    records = ev.evaluate(space, np.vstack([X, X[1:2]]))
    assert records[1].error == "RuntimeError: materialize failed on purpose"
    assert math.isnan(records[1].accuracy) and records[1].failed
    assert records[3].failed and records[3].cached
    assert records[0].accuracy > 0.5 and not records[2].failed
    assert ev.n_failed == 1 and ev.n_evaluated == 3 and ev.n_cached == 1


def test_nan_loss_while_finetuning_is_a_failure():
    space = NaNSpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, finetune=2, train_data=TRAIN, num_threads=1)
    record = ev.evaluate(space, _genomes(3, 1))[0]
    assert record.failed and record.error.startswith("TrainingDivergedError: training diverged at step 1")


@pytest.mark.parametrize("space_class", [TinySpace, DropoutSpace])
def test_finetuning_is_reproducible_in_any_order(space_class):
    space = space_class(tiny_model())
    rng_state = torch.get_rng_state()
    X = _genomes(4, 3)
    X[:, H1 // 2:H1] = False  # prune hard, so fine-tuning matters
    options = {"steps": 5, "lr": 0.05, "batch_size": 64}
    a = Evaluator(VAL, n_samples=None, finetune=options, train_data=TRAIN, num_threads=1)
    b = Evaluator(VAL, n_samples=None, finetune=options, train_data=TRAIN, num_threads=1)
    forward = [r.accuracy for r in a.evaluate(space, X)]
    torch.rand(3)  # whatever happens to the global generator in between
    backward = [r.accuracy for r in b.evaluate(space, X[::-1])][::-1]
    assert forward == backward
    torch.set_rng_state(rng_state)
    a.cache.clear()
    a.evaluate(space, X)
    assert torch.equal(torch.get_rng_state(), rng_state)  # evaluation leaves the global generator alone
    plain = [r.accuracy for r in Evaluator(VAL, n_samples=None, num_threads=1).evaluate(space, X)]
    assert forward != plain
    assert all(np.isfinite(r.loss) for r in a.evaluate(space, X))  # cached records keep the loss
    assert plan_seed(0, "abc") == plan_seed(0, "abc") != plan_seed(1, "abc")
    # the base model is untouched by fine-tuning
    assert Evaluator(VAL, n_samples=None).evaluate_model(space.model) == pytest.approx(evaluate(tiny_model(), VAL))


def test_bn_recalibration_reestimates_running_statistics():
    model = make_mlp(train=False, bn=True)
    bn = model[1]
    bn.running_mean.fill_(100.0)
    bn.running_var.fill_(1e-4)
    assert has_batchnorm(model) and not has_batchnorm(tiny_model())
    ev = Evaluator(VAL, n_samples=None, train_data=TRAIN, bn_batches=2, bn_batch_size=100, num_threads=1)
    ev._recalibrate_bn(model)
    pre = model[0](TRAIN.tensors[0][:200]).detach()
    torch.testing.assert_close(bn.running_mean, pre.mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training


def test_bn_recalibration_defaults_to_four_batches():
    model = make_mlp(train=False, bn=True)
    ev = Evaluator(VAL, n_samples=None, train_data=TRAIN, bn_batch_size=100, num_threads=1)
    ev._recalibrate_bn(model)
    pre = model[0](TRAIN.tensors[0]).detach()
    torch.testing.assert_close(model[1].running_mean, pre[:400].mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model[1].running_mean, pre.mean(0), rtol=1e-4, atol=1e-5)


def test_bn_recalibration_modes():
    space = TinySpace(make_mlp(train=True, bn=True))
    x = _genomes(5, 1)
    space.model[1].running_mean.fill_(50.0)  # stale statistics ruin the accuracy
    auto = Evaluator(VAL, n_samples=None, train_data=TRAIN, finetune=None,
                     num_threads=1).evaluate(space, x)[0].accuracy
    off = Evaluator(VAL, n_samples=None, train_data=TRAIN, bn_recalibration=False, finetune=None,
                    num_threads=1).evaluate(space, x)[0].accuracy
    no_data = Evaluator(VAL, n_samples=None, num_threads=1).evaluate(space, x)[0].accuracy
    assert off == no_data and auto > off + 0.2
    assert space.model[1].running_mean[0].item() == 50.0  # the base model is untouched


@pytest.mark.parametrize("kwargs, message", [
    ({"n_samples": 0}, "n_samples must be None or an int >= 1; got 0"),
    ({"batch_size": -5}, "batch_size must be an int >= 1; got -5"),
    ({"finetune": {"epochs": 1}, "train_data": TRAIN}, "finetune must be a dict with keys among"),
    ({"finetune": 10}, "train_data must be a TensorDataset when finetune is set; got None"),
    ({"finetune": "always"}, "finetune must be 'auto', None, a number of steps (int) or a dict"),
    ({"bn_recalibration": True}, "train_data must be a TensorDataset when bn_recalibration=True"),
    ({"bn_recalibration": "yes"}, "bn_recalibration must be one of ['auto', True, False]; got 'yes'"),
    ({"seed": 1.5}, "seed must be an int >= 0; got 1.5"),
    ({"seed": -1}, "seed must be an int >= 0; got -1"),
    ({"num_threads": 0}, "num_threads must be None or an int >= 1; got 0"),
    ({"channels_last": "yes"}, "channels_last must be one of ['auto', True, False]; got 'yes'"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(MopruneValueError) as info:
        Evaluator(VAL, **kwargs)
    assert message in str(info.value)


def test_finetune_auto_fine_tunes_only_with_training_data():
    space = TinySpace(tiny_model())
    x = _genomes(3, 1)
    assert Evaluator(VAL, num_threads=1).finetune is None  # nothing to fine-tune on
    auto = Evaluator(VAL, n_samples=None, train_data=TRAIN, num_threads=1)
    assert auto.finetune == AUTO_FINETUNE and auto.finetune is not AUTO_FINETUNE
    explicit = Evaluator(VAL, n_samples=None, train_data=TRAIN, finetune=AUTO_FINETUNE["steps"], num_threads=1)
    plain = Evaluator(VAL, n_samples=None, train_data=TRAIN, finetune=None, num_threads=1)
    records = [ev.evaluate(space, x) for ev in (auto, explicit, plain)]
    assert [r.accuracy for r in records[0]] == [r.accuracy for r in records[1]]
    assert all(math.isfinite(r.loss) for r in records[0]) and all(math.isnan(r.loss) for r in records[2])


def test_val_data_must_be_a_tensor_dataset():
    with pytest.raises(MopruneValueError, match="val_data must be a non-empty TensorDataset"):
        Evaluator([1, 2, 3])


def test_pickle_drops_data_deepcopy_shares_it():
    ev = Evaluator(VAL, n_samples=50, train_data=TRAIN, num_threads=1)
    blob = pickle.dumps(ev)
    assert len(blob) < 10_000  # 50 val + 600 train samples would be far larger
    clone = pickle.loads(blob)
    with pytest.raises(MopruneError, match="attach_data"):
        clone.val_subset
    with pytest.raises(MopruneError, match="differ"):
        clone.attach_data(make_data(400, seed=7), TRAIN)
    clone.attach_data(VAL, TRAIN)
    assert torch.equal(clone.val_subset.tensors[0], ev.val_subset.tensors[0])
    twin = copy.deepcopy(ev)
    assert twin.val_subset is ev.val_subset and twin.cache is not ev.cache


def test_num_threads_is_restored():
    before = torch.get_num_threads()
    seen = []
    space = TinySpace(tiny_model())
    materialize = space.materialize
    space.materialize = lambda plan: seen.append(torch.get_num_threads()) or materialize(plan)
    other = 2 if before == 1 else 1
    Evaluator(VAL, n_samples=None, num_threads=other).evaluate(space, _genomes(6, 1))
    assert seen == [other] and torch.get_num_threads() == before


def test_evaluate_checks_the_population_shape():
    ev = Evaluator(VAL, n_samples=None)
    with pytest.raises(MopruneValueError, match=r"X must be an n x 64 array of genomes; got 'array of shape \(3,\)'"):
        ev.evaluate(TinySpace(tiny_model()), np.ones(3, dtype=bool))


def test_plan_is_the_cache_key():
    record = EvalRecord(plan_key=Plan("channels", (), "k1").key, accuracy=0.25, seconds=1.0)
    assert record.as_cached() == EvalRecord(plan_key="k1", accuracy=0.25, seconds=0.0, cached=True)


def test_finetuning_an_unstructured_plan_keeps_its_pruned_weights_zero(monkeypatch):
    from moprune.space import WeightSpace

    space = WeightSpace(tiny_model(), torch.zeros(1, 10), encoding="ratio")
    x = np.full(space.n_var, 0.4)  # keep 40% of every layer's weights
    made = []
    materialize = space.materialize
    monkeypatch.setattr(space, "materialize", lambda plan: made.append(materialize(plan)) or made[-1])
    evaluator = Evaluator(make_data(200, seed=2), n_samples=200, finetune={"steps": 30, "lr": 0.1},
                          train_data=make_data(500, seed=3))
    record = evaluator.evaluate(space, x[None])[0]
    assert record.error is None and math.isfinite(record.loss)
    model, fresh = made[0], materialize(space.decode(x))
    for name, mask in space.masks(x).items():
        weight, before = model.get_submodule(name).weight, fresh.get_submodule(name).weight
        assert torch.all(weight[~mask] == 0), name  # pruned weights did not grow back
        assert not torch.equal(weight[mask], before[mask]), name  # the kept ones were trained


def test_finetune_plan_is_the_loop_fine_tuning_seeded_by_the_caller():
    space = DropoutSpace(tiny_model())
    x = _genomes(5, 1)[0]
    options = {"steps": 5, "lr": 0.05, "batch_size": 64}
    evaluator = Evaluator(VAL, n_samples=None, finetune=options, train_data=TRAIN, num_threads=1)
    plan = space.decode(x)
    model, loss = evaluator.finetune_plan(space, plan, seed=plan_seed(0, plan.key))
    again, loss_again = evaluator.finetune_plan(space, x, seed=plan_seed(0, plan.key))  # a genome works too
    assert math.isfinite(loss) and loss == loss_again
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    # the in-loop evaluation of the same plan is this very model
    assert evaluator.evaluate(space, x[None])[0].accuracy == evaluator.accuracy(model)
    other, _ = evaluator.finetune_plan(space, plan, seed=1, steps=1, lr=0.5)  # explicit options win
    assert not torch.equal(next(other.parameters()), next(model.parameters()))
    with pytest.raises(MopruneError, match="train_data"):
        Evaluator(VAL, n_samples=None).finetune_plan(space, plan, seed=0, steps=1)


class _ConvNet(nn.Module):
    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1))


@pytest.mark.parametrize("channels_last, expected", [("auto", True), (True, True), (False, False)])
def test_channels_last_runs_candidates_in_that_format_with_the_same_results(monkeypatch, channels_last, expected):
    from moprune.space import ChannelSpace

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _ConvNet().eval()
    x = torch.randn(300, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        data = TensorDataset(x, model(x).argmax(1))
    space = ChannelSpace(model, encoding="ratio")
    X = space.genomes_from_ratios(np.array([[1.0, 1.0], [0.5, 0.75], [0.25, 0.5]]))
    reference = [r.accuracy for r in Evaluator(data, n_samples=None, device="cpu", channels_last=False)
                 .evaluate(space, X)]
    ev = Evaluator(data, n_samples=None, device="cpu", channels_last=channels_last)
    formats = []
    measure = ev._measure

    def spy(m, max_errors=None):
        formats.append(m.conv1.weight.is_contiguous(memory_format=torch.channels_last)
                       and not m.conv1.weight.is_contiguous())
        return measure(m, max_errors)

    monkeypatch.setattr(ev, "_measure", spy)
    assert [r.accuracy for r in ev.evaluate(space, X)] == pytest.approx(reference, abs=1e-12)
    assert reference[0] == 1.0 and formats == [expected] * 3
    assert ev.evaluate_model(model) == 1.0
    assert not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # the caller's model untouched
    tuned = Evaluator(data, n_samples=None, device="cpu", channels_last=channels_last, train_data=data, finetune=3)
    formats.clear()
    measure = tuned._measure
    monkeypatch.setattr(tuned, "_measure", spy)
    tuned.evaluate(space, X)  # fine-tuned candidates are measured in the same format
    assert formats == [expected] * 3


# ----------------------------------------------------------------- screening
def _full_errors(ev, space, x):
    model = space.materialize(x)
    with torch.no_grad():
        return int((model(ev.val_subset.tensors[0]).argmax(1) != ev.val_subset.tensors[1]).sum())


def test_screened_run_stops_past_max_errors_and_reports_an_upper_bound():
    space = TinySpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, batch_size=40, num_threads=1, cache=False)
    n = len(ev.val_subset)
    X = _genomes(4, 6)
    for x in X:
        plan = space.decode(x)
        errors = _full_errors(ev, space, x)
        assert errors >= 4  # the pruned MLP makes errors to stop on
        full = ev.run(space, plan)
        loose = ev.run(space, plan, max_errors=errors)  # never exceeded: measured to the end
        tight = ev.run(space, plan, max_errors=errors // 3)
        assert not full.screened and not loose.screened and loose.accuracy == full.accuracy
        assert full.accuracy == pytest.approx(1 - errors / n)
        assert tight.screened
        seen = round((1 - tight.accuracy) * n)
        assert errors // 3 < seen <= errors  # stopped after the bound, so the accuracy is an upper bound
        assert tight.accuracy >= full.accuracy


def test_screened_records_in_the_cache_serve_only_bounds_they_still_exceed():
    space = TinySpace(tiny_model())
    ev = Evaluator(VAL, n_samples=None, batch_size=40, num_threads=1)
    x = _genomes(5, 1)
    errors = _full_errors(ev, space, x[0])
    (first,) = ev.evaluate(space, x, error_bounds=[1])
    assert first.screened and ev.n_evaluated == 1
    (again,) = ev.evaluate(space, x, error_bounds=[0])  # still exceeded: served by the cache
    assert again.cached and again.screened and ev.n_evaluated == 1
    (full,) = ev.evaluate(space, x)  # no bound: measured again, to the end
    assert not full.cached and not full.screened and ev.n_evaluated == 2
    assert full.accuracy == pytest.approx(1 - errors / len(VAL))
    (served,) = ev.evaluate(space, x, error_bounds=[0])  # a full record serves any bound
    assert served.cached and not served.screened
    with pytest.raises(MopruneValueError, match="error_bounds"):
        ev.evaluate(space, _genomes(6, 2), error_bounds=[1])


def test_rank_images_puts_the_hardest_first_and_survives_pickling():
    model = tiny_model()
    ev = Evaluator(VAL, n_samples=200, batch_size=64, num_threads=1, seed=3)
    before = ev.evaluate_model(model)
    images = ev.val_subset.tensors[0].clone()
    assert not ev.images_ranked
    ev.rank_images(model)
    assert ev.images_ranked
    x, y = ev.val_subset.tensors
    with torch.no_grad():
        out = model(x)
    true = out.gather(1, y[:, None])[:, 0]
    rest = out.scatter(1, y[:, None], float("-inf")).max(1).values
    margin = (true - rest).numpy()
    assert (np.diff(margin) >= -1e-5).all()  # smallest margin (misclassified) first
    assert not torch.equal(x, images)  # the order changed, not the images
    assert sorted(map(tuple, x.numpy().round(5))) == sorted(map(tuple, images.numpy().round(5)))
    assert ev.evaluate_model(model) == pytest.approx(before)
    back = pickle.loads(pickle.dumps(ev))
    back.attach_data(VAL)
    assert torch.equal(back.val_subset.tensors[0], x) and back.images_ranked
