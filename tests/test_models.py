import pytest
import thop
import torch
from torch.utils.data import TensorDataset

from moprune.data import Splits
from moprune.exceptions import MopruneValueError
from moprune.models import get_model, model_names, pretrained, weights_path

EXPECTED_COUNTS = {  # (MACs, params) counted by thop on a 1 x 1 x 28 x 28 input
    "mnist_cnn": (13_883_904, 3_274_634),
    "lenet5_caffe": (2_293_000, 431_080),
}


def thop_counts(model):
    macs, params = thop.profile(model, inputs=(torch.zeros(1, *model.input_shape),), verbose=False)
    return int(macs), int(params)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_thop_counts_match_the_documents(name):
    assert thop_counts(get_model(name)) == EXPECTED_COUNTS[name]


def test_lenet5_has_61470_weights_without_biases():
    model = get_model("lenet5")
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 61_470


@pytest.mark.parametrize("name", ["mnist_cnn", "lenet5", "lenet5_caffe", "vgg_small", "resnet8"])
def test_every_zoo_model_maps_mnist_images_to_ten_logits(name):
    model = get_model(name).eval()
    assert model(torch.zeros(3, *model.input_shape)).shape == (3, 10)
    assert get_model(name, num_classes=4)(torch.zeros(2, 1, 28, 28)).shape == (2, 4)


def test_resnet8_has_batchnorm_and_residual_blocks():
    model = get_model("resnet8")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 9
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 9


def test_unknown_model_lists_the_choices():
    with pytest.raises(MopruneValueError) as info:
        get_model("alexnet")
    assert "'alexnet'" in str(info.value)
    for name in model_names():
        assert name in str(info.value)


def _tiny_splits(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return Splits(ds, ds, ds)


@pytest.mark.slow
def test_pretrained_trains_once_then_loads_the_same_weights(tmp_path, monkeypatch):
    data = _tiny_splits()
    first = pretrained("lenet5", data=data, cache=str(tmp_path), progress=False, epochs=1, batch_size=32)
    path = weights_path("lenet5", {"epochs": 1, "lr": 0.05, "batch_size": 32, "weight_decay": 5e-4, "seed": 0},
                        cache=str(tmp_path), data=data)
    assert (tmp_path / "weights").is_dir() and torch.load(path, weights_only=True).keys()
    assert not first.training

    import moprune.models.baselines as module

    monkeypatch.setattr(module, "fit", lambda *a, **k: pytest.fail("retrained a cached baseline"))
    second = pretrained("lenet5", data=data, cache=str(tmp_path), epochs=1, batch_size=32)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_pretrained_is_reproducible_and_keyed_by_recipe(tmp_path):
    data = _tiny_splits()
    a = pretrained("lenet5", data=data, cache=str(tmp_path / "a"), progress=False, epochs=1, batch_size=32)
    b = pretrained("lenet5", data=data, cache=str(tmp_path / "b"), progress=False, epochs=1, batch_size=32)
    c = pretrained("lenet5", data=data, cache=str(tmp_path / "a"), progress=False, epochs=1, batch_size=32, seed=1)
    assert torch.equal(a.fc3.weight, b.fc3.weight)
    assert not torch.equal(a.fc3.weight, c.fc3.weight)
    assert len(list((tmp_path / "a" / "weights").glob("*.pt"))) == 2


def test_baseline_cache_is_keyed_by_the_training_data():
    import moprune.models.baselines as module

    recipe = {**module.DEFAULT_RECIPE, "epochs": 1, "batch_size": 32}
    data, other = _tiny_splits(seed=0), _tiny_splits(seed=1)  # same shapes, other images and labels
    assert weights_path("lenet5", recipe, cache="c", data=data) == weights_path("lenet5", recipe, cache="c",
                                                                                 data=_tiny_splits(seed=0))
    assert weights_path("lenet5", recipe, cache="c", data=data) != weights_path("lenet5", recipe, cache="c",
                                                                                 data=other)
    # one changed label among the sampled items, or another size, is another data set
    images, labels = data.train.tensors
    relabelled = labels.clone()
    relabelled[-1] = (relabelled[-1] + 1) % 10
    assert module.data_fingerprint(TensorDataset(images, relabelled)) != module.data_fingerprint(data.train)
    assert module.data_fingerprint(TensorDataset(images[:-1], labels[:-1])) != module.data_fingerprint(data.train)


@pytest.mark.slow
def test_a_baseline_trained_on_other_data_is_not_reused(tmp_path, monkeypatch):
    import moprune.models.baselines as module

    data, other = _tiny_splits(seed=0), _tiny_splits(seed=1)
    trained = []
    fit = module.fit
    monkeypatch.setattr(module, "fit", lambda *a, **k: trained.append(1) or fit(*a, **k))
    pretrained("lenet5", data=data, cache=str(tmp_path), progress=False, epochs=1, batch_size=32)
    pretrained("lenet5", data=data, cache=str(tmp_path), progress=False, epochs=1, batch_size=32)
    pretrained("lenet5", data=other, cache=str(tmp_path), progress=False, epochs=1, batch_size=32)
    assert len(trained) == 2 and len(list((tmp_path / "weights").glob("*.pt"))) == 2


def test_pretrained_rejects_unknown_recipe_keys(tmp_path):
    with pytest.raises(TypeError, match="unknown recipe keys \\['epoch'\\]"):
        pretrained("lenet5", cache=str(tmp_path), epoch=3)
