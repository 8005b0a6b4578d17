"""moprune.plotting: the data behind each figure, then the figure itself (Agg backend, PNG files)."""

import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from torch import nn  # noqa: E402

from moprune import plotting as P  # noqa: E402
from moprune import results as R  # noqa: E402
from moprune.archive import Evaluation, SearchResult  # noqa: E402
from moprune.exceptions import MopruneValueError  # noqa: E402
from moprune.models import get_model  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_eval(accuracy, macs_ratio, *, generation=0, error=None, c1=None):
    c1 = int(round(32 * macs_ratio)) if c1 is None else c1
    return Evaluation(
        genome=np.array([accuracy, macs_ratio, generation]), plan_key=f"{accuracy}-{macs_ratio}",
        summary={"kept/conv1": c1, "kept/conv2": int(round(64 * macs_ratio))},
        objectives=(1 - accuracy, macs_ratio), accuracy=accuracy, macs=macs_ratio * 1e6, params=macs_ratio * 1e5,
        macs_ratio=macs_ratio, params_ratio=macs_ratio, sparsity=1 - macs_ratio, generation=generation, error=error)


class FakeSpace:
    """Enough of a space for to_frame's base summary: the unpruned plan has 32 and 64 channels."""

    def original(self):
        return np.ones(3)

    def decode(self, x):
        return types.SimpleNamespace(summary={"kept/conv1": 32, "kept/conv2": 64})


# (accuracy, macs_ratio, generation); front: evals 0, 1, 2, 3
POINTS = [(0.99, 1.0, 0), (0.98, 0.5, 0), (0.95, 0.25, 1), (0.80, 0.125, 1), (0.90, 0.5, 1), (0.70, 0.5, 1)]


def make_result(space=None, pymoo_result=None, points=POINTS, extra=()):
    archive = [make_eval(a, m, generation=g) for a, m, g in points] + list(extra)
    return SearchResult(archive=archive, objectives=("error", "macs"), algorithm="nsga2", seed=0,
                        base_accuracy=0.99, base_macs=1e6, base_params=1e5, space=space,
                        pymoo_result=pymoo_result)


def save_png(ax, path):
    ax.figure.savefig(path, dpi=50)
    image = matplotlib.image.imread(path)
    assert path.stat().st_size > 1000 and image.shape[0] > 50 and image.shape[1] > 50
    return image


# ---------------------------------------------------------------------------------- Pareto

def test_pareto_frame_flags_the_front_and_drops_failures():
    result = make_result(extra=[make_eval(0.999, 0.01, error="boom")])
    frame = P.pareto_frame(result)
    assert list(frame.index) == [0, 1, 2, 3, 4, 5]  # the failed eval 6 is gone
    assert list(frame.columns) == ["macs_ratio", "accuracy", "feasible", "generation", "screened", "on_front"]
    assert frame["on_front"].tolist() == [True, True, True, True, False, False]
    assert frame.attrs["base_accuracy"] == 0.99


def test_plot_pareto_draws_points_front_pick_and_base(tmp_path):
    result = make_result()
    chosen = R.pick(result, "max_drop", max_drop=5)
    assert chosen.name == 2
    ax = P.plot_pareto(result, pick=chosen)
    assert ax.get_xlabel() == "MACs (ratio to base)" and ax.get_ylabel() == "validation accuracy"
    lines = {line.get_label(): line for line in ax.get_lines()}
    front = lines["Pareto front"]
    assert front.get_drawstyle() == "steps-post"
    assert list(front.get_xdata()) == [0.125, 0.25, 0.5, 1.0]
    assert list(front.get_ydata()) == [0.80, 0.95, 0.98, 0.99]
    assert (lines["picked"].get_xdata()[0], lines["picked"].get_ydata()[0]) == (0.25, 0.95)
    assert (lines["base model"].get_xdata()[0], lines["base model"].get_ydata()[0]) == (1.0, 0.99)
    assert len(ax.collections[0].get_offsets()) == 6  # every evaluated point, faded
    assert ax.collections[0].get_alpha() == pytest.approx(0.3)
    save_png(ax, tmp_path / "pareto.png")


def test_plot_pareto_draws_screened_candidates_apart():
    stopped = make_eval(0.97, 0.6)
    stopped.screened = True  # an upper bound, dominated by the 0.98 at 0.5
    ax = P.plot_pareto(make_result(extra=[stopped]))
    assert [len(c.get_offsets()) for c in ax.collections[:2]] == [6, 1]
    assert tuple(ax.collections[1].get_offsets()[0]) == (0.6, 0.97)
    assert "stopped early (accuracy at most)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)


def test_plot_pareto_uses_the_given_axes_and_validates_pick():
    fig, ax = plt.subplots()
    assert P.plot_pareto(R.to_frame(make_result()), ax=ax) is ax
    with pytest.raises(MopruneValueError, match="pick must be a row"):
        P.plot_pareto(make_result(), pick=3)


# ----------------------------------------------------------------------------- convergence

def test_plot_convergence_draws_mean_lines_and_bands(tmp_path):
    runs = {
        "nsga2": [make_result(), make_result(points=POINTS[::-1])],
        "ga-weighted": [make_result(points=POINTS[:2])],
    }
    df = R.compare(runs, grid=[1, 2, 4, 6])
    ax = P.plot_convergence(df)
    assert ax.get_xlabel() == "evaluations" and ax.get_ylabel() == "hypervolume (normalised)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    nsga2 = df[df.algorithm == "nsga2"]
    assert list(lines["nsga2"].get_xdata()) == [1, 2, 4, 6]
    assert np.allclose(lines["nsga2"].get_ydata(), nsga2.hv_mean)
    # ga-weighted ran 2 evaluations: drawn at 1 and 2 only
    assert list(lines["ga-weighted"].get_xdata()) == [1, 2]
    assert len(ax.collections) == 2  # one band per algorithm
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx((nsga2.hv_mean + nsga2.hv_std).max())
    save_png(ax, tmp_path / "convergence.png")


def test_plot_convergence_validates():
    with pytest.raises(MopruneValueError, match="compare_df must be a DataFrame from moprune.results.compare"):
        P.plot_convergence(R.to_frame(make_result()))


# --------------------------------------------------------------------------- kept channels

def test_kept_channels_frame_selections_and_normalisation():
    result = make_result(space=FakeSpace())
    last = P.kept_channels_frame(result)  # no pymoo result: the last generation (1)
    assert list(last.index) == [3, 2, 4, 5]  # sorted by MACs ratio, stable
    assert list(last.columns) == ["conv1", "conv2"]
    assert last.attrs["value_label"] == "fraction of channels kept"
    assert last.loc[2].tolist() == [8 / 32, 16 / 64]
    counts = P.kept_channels_frame(result, which="all", normalize=False)
    assert counts.loc[0].tolist() == [32, 64] and len(counts) == 6
    assert counts.attrs["value_label"] == "kept channels"
    assert list(P.kept_channels_frame(result, which="front").index) == [3, 2, 1, 0]
    # without a space, counts (base unknown)
    assert P.kept_channels_frame(make_result(), which="all").attrs["value_label"] == "kept channels"
    with pytest.raises(MopruneValueError, match="normalize=True needs the base model's channel counts"):
        P.kept_channels_frame(make_result(), normalize=True)
    with pytest.raises(MopruneValueError, match="which must be one of"):
        P.kept_channels_frame(result, which="best")


def test_kept_channels_frame_reads_the_final_population_from_pymoo():
    genomes = np.array([[0.98, 0.5, 0], [0.80, 0.125, 1]])  # evals 1 and 3
    pop = types.SimpleNamespace(get=lambda key: genomes)
    result = make_result(space=FakeSpace(), pymoo_result=types.SimpleNamespace(pop=pop))
    assert list(P.kept_channels_frame(result).index) == [3, 1]


def test_plot_kept_channels_heatmap(tmp_path):
    result = make_result(space=FakeSpace())
    ax = P.plot_kept_channels(result, which="all")
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "candidate (sorted by MACs ratio)"
    mesh = ax.collections[0]
    assert mesh.get_array().size == 6 * 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "conv2"]
    save_png(ax, tmp_path / "kept.png")


# ------------------------------------------------------------------------------ layer MACs

def pruned_mnist_cnn():
    model = get_model("mnist_cnn")
    model.conv1 = nn.Conv2d(1, 12, 5, padding=2)
    model.conv2 = nn.Conv2d(12, 20, 5, padding=2)
    model.fc1 = nn.Linear(20 * 7 * 7, 100)
    model.fc2 = nn.Linear(100, 10)
    return model.eval()


def test_layer_macs_frame_counts_by_hand():
    frame = P.layer_macs_frame(get_model("mnist_cnn"), pruned_mnist_cnn())
    assert frame["layer"].tolist() == ["conv1", "conv2", "fc1", "fc2"]
    assert frame["macs_base"].tolist() == [32 * 25 * 784, 64 * 32 * 25 * 196, 3136 * 1024, 1024 * 10]
    assert frame["macs_pruned"].tolist() == [12 * 25 * 784, 20 * 12 * 25 * 196, 980 * 100, 100 * 10]
    assert frame["macs_base"].sum() == 13_883_904
    assert frame.loc[0, "ratio"] == pytest.approx(12 / 32)


def test_layer_macs_frame_accepts_a_space_and_a_picked_row():
    class Space:
        def materialize(self, genome):
            assert list(genome) == [1, 0]
            return pruned_mnist_cnn()

    row = R.to_frame(make_result()).iloc[0].copy()
    row["genome"] = np.array([1, 0])
    frame = P.layer_macs_frame(get_model("mnist_cnn"), (Space(), row))
    assert frame["macs_pruned"].iloc[3] == 1000


def test_plot_layer_macs_bars(tmp_path):
    base = get_model("mnist_cnn")
    ax = P.plot_layer_macs(base, pruned_mnist_cnn())
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "MACs"
    heights = sorted(round(p.get_height()) for p in ax.patches if p.get_height() > 0)
    assert heights == sorted([627200, 10035200, 3211264, 10240, 235200, 1176000, 98000, 1000])
    save_png(ax, tmp_path / "layer_macs.png")
    with pytest.raises(MopruneValueError, match="input_shape must be given"):
        P.layer_macs_frame(nn.Sequential(nn.Linear(4, 2)), nn.Sequential(nn.Linear(4, 1)))
    assert P.layer_macs_frame(nn.Sequential(nn.Linear(4, 2)), nn.Sequential(nn.Linear(4, 1)),
                              input_shape=(4,))["macs_pruned"].tolist() == [4]
