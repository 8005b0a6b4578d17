import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from moprune.exceptions import MopruneValueError
from moprune.train import evaluate, finetune, fit


def blobs(n=400, seed=0):
    """Two Gaussian blobs in 8 dimensions, linearly separable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + 3.0 * (2 * y[:, None].float() - 1)
    return TensorDataset(x, y)


def mlp(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


class LabelEcho(nn.Module):
    """Predicts the class stored in the first input feature."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 3).float()


def test_evaluate_counts_correct_predictions():
    x = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    assert evaluate(LabelEcho(), TensorDataset(x, torch.tensor([0, 1, 2, 2])), batch_size=3) == 0.75


@pytest.mark.slow
def test_fit_learns_separable_data():
    model = mlp()
    before = evaluate(model, blobs(seed=1))
    loss = fit(model, blobs(), epochs=3, lr=0.1, batch_size=32, generator=torch.Generator().manual_seed(0),
               progress=False)
    assert evaluate(model, blobs(seed=1)) >= 0.97 > before
    assert loss < 0.2 and not model.training


@pytest.mark.slow
def test_fit_is_deterministic_under_a_generator():
    a, b = mlp(), mlp()
    for model in (a, b):
        fit(model, blobs(), epochs=2, generator=torch.Generator().manual_seed(5), progress=False)
    c = mlp()
    fit(c, blobs(), epochs=2, generator=torch.Generator().manual_seed(6), progress=False)
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_finetune_takes_exactly_the_requested_steps():
    model, steps = mlp(), []
    model[0].weight.register_hook(lambda grad: steps.append(1))
    finetune(model, blobs(n=100), steps=7, batch_size=32, generator=torch.Generator().manual_seed(0))
    assert len(steps) == 7  # 100 images / 32 = 4 steps per epoch, so this crosses an epoch


@pytest.mark.slow
def test_distillation_pulls_student_towards_teacher():
    teacher, student = mlp(seed=1), mlp(seed=2)
    x = blobs().tensors[0]
    gap = lambda: (torch.softmax(student(x), 1) - torch.softmax(teacher(x), 1)).abs().mean().item()
    before = gap()
    fit(student, blobs(), epochs=10, lr=0.05, batch_size=16, weight_decay=0.0, teacher=teacher,
        distill_weight=1.0, temperature=1.0,
        generator=torch.Generator().manual_seed(0), progress=False)
    assert gap() < 0.5 * before


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be an int >= 1; got 0"),
    ({"epochs": 1.5}, "epochs must be an int >= 1; got 1.5"),
    ({"lr": -1.0}, "lr must be a finite real number > 0; got -1.0"),
    ({"lr": float("nan")}, "lr must be a finite real number > 0; got nan"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of ['sgd', 'adam']; got 'rmsprop'"),
    ({"schedule": "step"}, "schedule must be one of ['cosine', 'constant']; got 'step'"),
    ({"distill_weight": 2.0}, "distill_weight must be a real number in [0, 1]; got 2.0"),
])
def test_fit_rejects_bad_arguments(kwargs, message):
    with pytest.raises(MopruneValueError) as info:
        fit(mlp(), blobs(), progress=False, **kwargs)
    assert str(info.value) == message


def test_crop_augmentation_shifts_digits_without_mirroring_them():
    import torch

    from moprune.data.augment import CROP_PADDING, augment_batch

    x = torch.zeros(64, 1, 12, 12)
    x[:, 0, 4:8, 5] = 1.0  # a vertical bar left of the centre column: a mirror moves it right of it
    x[:, 0, 4, 5:8] = 1.0  # and a top bar going right, which a mirror turns left
    out = augment_batch(x, "crop", generator=torch.Generator().manual_seed(0))
    shifts = set()
    for image in out:
        ys, xs = torch.nonzero(image[0], as_tuple=True)
        dy, dx = int(ys.min()) - 4, int(xs.min()) - 5
        assert abs(dy) <= CROP_PADDING and abs(dx) <= CROP_PADDING
        assert torch.equal(torch.roll(x[0, 0], (dy, dx), dims=(0, 1)), image[0])  # a pure shift, never a mirror
        shifts.add((dy, dx))
    assert len(shifts) > 10  # the shifts vary from image to image


@pytest.mark.parametrize("lr", [1e4, 1e30])  # the loss explodes (finite), or overflows to inf / nan
def test_diverging_training_stops_with_an_error_that_names_the_learning_rate(lr):
    from moprune.exceptions import MopruneError, TrainingDivergedError

    model = mlp()
    with pytest.raises(TrainingDivergedError, match="training diverged at step .*lower lr " + re.escape(f"(it is {lr})")) as info:
        fit(model, blobs(), epochs=20, lr=lr, batch_size=32, weight_decay=0.0,
            generator=torch.Generator().manual_seed(0), progress=False)
    assert isinstance(info.value, MopruneError)
    # a sane rate on the same model and data trains through
    assert fit(mlp(), blobs(), epochs=1, lr=0.05, batch_size=32, generator=torch.Generator().manual_seed(0),
               progress=False) < 1.0


def test_fit_on_the_cpu_trains_channels_last_and_hands_the_model_back_as_it_came():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    x = torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())
    seen = []
    model[0].register_forward_pre_hook(lambda m, inputs: seen.append(
        m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()))
    fit(model, data, epochs=1, batch_size=16, progress=False, device="cpu")
    assert seen and all(seen)  # trained in channels-last format ...
    assert model[0].weight.is_contiguous()  # ... and handed back contiguous, as it came
    model.to(memory_format=torch.channels_last)
    fit(model, data, epochs=1, batch_size=16, progress=False, device="cpu")
    assert not model[0].weight.is_contiguous()  # one that came in channels-last stays so
