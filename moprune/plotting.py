"""Figures of a search: Pareto curve, convergence, kept channels per layer, per-layer MACs.

Each figure has a data function (``*_frame``) that builds the DataFrame it draws, tested
without drawing, and a ``plot_*`` function that draws it with seaborn on ``ax`` (a new figure
when ``ax`` is ``None``) and returns the Axes. Nothing here calls ``plt.show()``.
"""

import copy

import numpy as np
import pandas as pd

from moprune.exceptions import MopruneValueError, invalid_value
from moprune.results.frame import _as_frame, pareto_front

__all__ = [
    "kept_channels_frame",
    "layer_macs_frame",
    "pareto_frame",
    "plot_convergence",
    "plot_kept_channels",
    "plot_layer_macs",
    "plot_pareto",
    "plot_retrained_front",
]

MACS_LABEL = "MACs (ratio to base)"
ACCURACY_LABEL = "validation accuracy"


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.8))
    return ax


# ---------------------------------------------------------------------------------- Pareto


def pareto_frame(data, *, objectives=("error", "macs")):
    """Every successfully evaluated candidate with a flag for the front drawn by :func:`plot_pareto`.

    Args:
        data: A SearchResult or a frame from :func:`moprune.results.to_frame`.
        objectives: The objectives of the front (default: accuracy against MACs, the plot's axes).

    Returns:
        A DataFrame indexed by ``eval`` with ``macs_ratio, accuracy, feasible, generation,
        screened`` (those the frame has) and ``on_front``; ``attrs`` carries the frame's
        (``base_accuracy``...).
    """
    df = _as_frame(data, "data")
    for column in ("macs_ratio", "accuracy"):
        if column not in df.columns:
            raise MopruneValueError(f"data lacks the column {column!r}; build it with moprune.results.to_frame")
    ok = df["accuracy"].notna().to_numpy().copy()
    if "error_message" in df.columns:
        ok &= df["error_message"].isna().to_numpy()
    points = df[ok]
    columns = [c for c in ("macs_ratio", "accuracy", "feasible", "generation", "screened") if c in points.columns]
    out = points[columns].copy()
    front = pareto_front(df, objectives=objectives)
    out["on_front"] = out.index.isin(front.index)
    return out


def plot_pareto(data, *, pick=None, objectives=("error", "macs"), log_macs=False, zoom=None, ax=None):
    """Accuracy against MACs ratio: every evaluated candidate faded, the front as a step line.

    Candidates whose measurement stopped early as dominated (``screened``) are drawn as faded
    triangles at their accuracy's upper bound.

    Args:
        data: A SearchResult or a frame from :func:`moprune.results.to_frame`.
        pick: A row from :func:`moprune.results.pick` to mark (optional).
        objectives: Objectives of the drawn front.
        log_macs: Draw the MACs axis on a log scale (small models get the room they need).
        zoom: Show only accuracies within this many points below the base (``None``: all).
        ax: Axes to draw on (default: a new figure).

    Returns:
        The Axes (x label ``"MACs (ratio to base)"``, y label ``"validation accuracy"``).
    """
    import seaborn as sns

    points = pareto_frame(data, objectives=objectives)
    ax = _axes(ax)
    screened = points["screened"].astype(bool) if "screened" in points.columns else np.zeros(len(points), bool)
    sns.scatterplot(data=points[~screened], x="macs_ratio", y="accuracy", color="0.5", alpha=0.3, s=18,
                    edgecolor="none", label="evaluated", ax=ax)
    if screened.any():  # their accuracy is an upper bound: drawn apart
        sns.scatterplot(data=points[screened], x="macs_ratio", y="accuracy", color="0.5", alpha=0.3, s=14,
                        marker="v", edgecolor="none", label="stopped early (accuracy at most)", ax=ax)
    front = points[points["on_front"]].sort_values(["macs_ratio", "accuracy"])
    if len(front):
        ax.step(front["macs_ratio"], front["accuracy"], where="post", color="C0", label="Pareto front")
        ax.plot(front["macs_ratio"], front["accuracy"], "o", color="C0", markersize=4)
    if pick is not None:
        if not isinstance(pick, pd.Series) or not {"macs_ratio", "accuracy"} <= set(pick.index):
            raise invalid_value("pick", "a row (pandas Series) from moprune.results.pick", type(pick).__name__)
        ax.plot([pick["macs_ratio"]], [pick["accuracy"]], marker="*", color="C3", markersize=16,
                linestyle="none", label="picked")
    base = points.attrs.get("base_accuracy")
    if base is not None and np.isfinite(base):
        ax.plot([1.0], [base], marker="X", color="k", markersize=10, linestyle="none", label="base model")
    _scale_axes(ax, log_macs=log_macs, zoom=zoom, top=points["accuracy"].max() if len(points) else None, base=base)
    ax.set_xlabel(MACS_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.legend(loc="lower right")
    return ax


def _scale_axes(ax, *, log_macs, zoom, top, base):
    if not isinstance(log_macs, bool):
        raise invalid_value("log_macs", "True or False", log_macs)
    if log_macs:
        ax.set_xscale("log")
    if zoom is not None:
        if isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or not 0 < zoom <= 100:
            raise invalid_value("zoom", "None or accuracy points in (0, 100]", zoom)
        if base is None or not np.isfinite(base):
            raise invalid_value("zoom", "None when the data carry no base accuracy", zoom)
        high = max(base, top if top is not None and np.isfinite(top) else base)
        ax.set_ylim(base - zoom / 100.0, high + 0.1 * zoom / 100.0)


def plot_retrained_front(retrained, *, search=None, log_macs=True, zoom=None, ax=None):
    """The front after retraining next to the one found during search, and the base model.

    Args:
        retrained: The frame from :func:`moprune.retrain_front`.
        search: The run's SearchResult or frame, to draw its search-time front too (optional).
        log_macs: Draw the MACs axis on a log scale.
        zoom: Show only accuracies within this many points below the base (``None``: all).
        ax: Axes to draw on (default: a new figure).

    Returns:
        The Axes: validation accuracy against MACs ratio, one line per stage.
    """
    if not isinstance(retrained, pd.DataFrame) or not {"macs_ratio", "accuracy", "search_accuracy"} <= set(
            retrained.columns):
        raise invalid_value("retrained", "the DataFrame from moprune.retrain_front", type(retrained).__name__)
    ax = _axes(ax)
    if search is not None:
        front = pareto_front(search).sort_values("macs_ratio")
        ax.step(front["macs_ratio"], front["accuracy"], where="post", color="0.6", alpha=0.7,
                label="front during search (validation subset)")
    r = retrained.sort_values("macs_ratio")
    ax.plot(r["macs_ratio"], r["search_accuracy"], "o", color="0.4", markersize=5, label="retrained points, before")
    ax.plot(r["macs_ratio"], r["accuracy"], "o-", color="C0", markersize=6, label="after retraining (validation)")
    base = retrained.attrs.get("base_val_accuracy")
    if base is not None and np.isfinite(base):
        ax.plot([1.0], [base], marker="X", color="k", markersize=10, linestyle="none", label="base model")
    _scale_axes(ax, log_macs=log_macs, zoom=zoom, top=r["accuracy"].max(), base=base)
    ax.set_xlabel(MACS_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.legend(loc="lower right", fontsize="small")
    return ax


# ----------------------------------------------------------------------------- convergence


def plot_convergence(compare_df, *, ax=None):
    """Hypervolume against evaluations for each algorithm, with a band of one standard deviation.

    Args:
        compare_df: The frame from :func:`moprune.results.compare`.
        ax: Axes to draw on (default: a new figure).

    Returns:
        The Axes (x label ``"evaluations"``, y label ``"hypervolume (normalised)"``).
    """
    import seaborn as sns

    needed = {"algorithm", "n_evals", "hv_mean", "hv_std"}
    if not isinstance(compare_df, pd.DataFrame) or not needed <= set(compare_df.columns):
        raise invalid_value("compare_df", f"a DataFrame from moprune.results.compare (columns {sorted(needed)})",
                            type(compare_df).__name__)
    ax = _axes(ax)
    algorithms = list(dict.fromkeys(compare_df["algorithm"]))
    colors = sns.color_palette(n_colors=max(len(algorithms), 1))
    for color, name in zip(colors, algorithms):
        rows = compare_df[(compare_df["algorithm"] == name) & compare_df["hv_mean"].notna()]
        rows = rows.sort_values("n_evals")
        x, mean = rows["n_evals"].to_numpy(float), rows["hv_mean"].to_numpy(float)
        std = np.nan_to_num(rows["hv_std"].to_numpy(float), nan=0.0)
        ax.plot(x, mean, marker="o", markersize=3, color=color, label=str(name))
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (normalised)")
    if algorithms:
        ax.legend(title="algorithm")
    return ax


# --------------------------------------------------------------------------- kept channels

_WHICH = ("population", "front", "last_generation", "all")


def _population_rows(data, df):
    """Rows of the final population when the pymoo result is at hand, else of the last generation."""
    pymoo_result = getattr(data, "pymoo_result", None)
    pop = getattr(pymoo_result, "pop", None)
    if pop is not None and len(df) and {"genome_hash", "genome"} <= set(df.columns):
        from moprune.results.frame import genome_hash

        hashes = {genome_hash(np.asarray(x).astype(df["genome"].iloc[0].dtype, copy=False))
                  for x in pop.get("X")}
        rows = df[df["genome_hash"].isin(hashes)]
        rows = rows[~rows["genome_hash"].duplicated()]
        if len(rows):
            return rows
    return df[df["generation"] == df["generation"].max()] if len(df) else df


def kept_channels_frame(data, *, which="population", normalize=None):
    """Kept channels (or sparsity) per layer, one row per candidate, sorted by MACs ratio.

    Args:
        data: A SearchResult or a frame from :func:`moprune.results.to_frame`.
        which: ``"population"`` (the final population: the pymoo result's ``pop`` when
            ``data`` is a SearchResult carrying it, else the last generation's candidates),
            ``"front"``, ``"last_generation"`` or ``"all"``.
        normalize: Divide kept channels by the base model's (``attrs["base_summary"]``); default:
            whenever those are known.

    Returns:
        A wide DataFrame: index ``eval``, one column per layer/group (the summary key without its
        ``kept/`` or ``sparsity/`` prefix); ``attrs["value_label"]`` names the values.
    """
    if which not in _WHICH:
        raise invalid_value("which", f"one of {list(_WHICH)}", which)
    df = _as_frame(data, "data")
    if "error_message" in df.columns:
        df = df[df["error_message"].isna()]
    kept = [c for c in df.columns if isinstance(c, str) and c.startswith("kept/")]
    prefix = "kept/"
    if not kept:
        kept = [c for c in df.columns if isinstance(c, str) and c.startswith("sparsity/")]
        prefix = "sparsity/"
    if not kept:
        raise MopruneValueError("the frame has no 'kept/<layer>' or 'sparsity/<layer>' columns: "
                                "the space's plan summary is empty")
    if which == "population":
        rows = _population_rows(data, df)
    elif which == "front":
        rows = pareto_front(df)
    elif which == "last_generation":
        rows = df[df["generation"] == df["generation"].max()] if len(df) else df
    else:
        rows = df
    if "plan_key" in rows.columns:
        rows = rows[~rows["plan_key"].duplicated()]
    rows = rows.sort_values("macs_ratio", kind="stable") if "macs_ratio" in rows.columns else rows
    out = rows[kept].astype(float)
    base = df.attrs.get("base_summary") or {}
    if normalize is None:
        normalize = prefix == "kept/" and all(base.get(c) for c in kept)
    if not isinstance(normalize, bool):
        raise invalid_value("normalize", "True, False or None", normalize)
    if normalize and prefix == "kept/":
        missing = [c for c in kept if not base.get(c)]
        if missing:
            raise MopruneValueError(f"normalize=True needs the base model's channel counts, unknown for {missing}")
        out = out / np.array([float(base[c]) for c in kept])
        label = "fraction of channels kept"
    else:
        label = "kept channels" if prefix == "kept/" else "sparsity"
    out.columns = [c[len(prefix):] for c in kept]
    out.attrs = {"value_label": label, "which": which}
    return out


def plot_kept_channels(data, *, which="population", normalize=None, ax=None):
    """Heatmap of kept channels per layer across candidates (GeneCAI fig. 7).

    Args:
        data, which, normalize: See :func:`kept_channels_frame`.
        ax: Axes to draw on (default: a new figure).

    Returns:
        The Axes (x label ``"layer"``, y label ``"candidate (sorted by MACs ratio)"``).
    """
    import seaborn as sns

    frame = kept_channels_frame(data, which=which, normalize=normalize)
    ax = _axes(ax)
    label = frame.attrs["value_label"]
    fraction = label != "kept channels"
    sns.heatmap(frame, ax=ax, cmap="viridis", vmin=0.0, vmax=1.0 if fraction else None,
                cbar_kws={"label": label}, yticklabels=len(frame) <= 40)
    ax.set_xlabel("layer")
    ax.set_ylabel("candidate (sorted by MACs ratio)")
    return ax


# ------------------------------------------------------------------------------ layer MACs


def _layer_macs(model, input_shape):
    """``{module name: (type name, thop MACs)}`` for the Conv/Linear layers of ``model``."""
    import thop
    import torch
    from torch import nn

    probe = copy.deepcopy(model).eval()
    types = {name: type(m).__name__ for name, m in probe.named_modules()
             if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    with torch.no_grad():
        _, _, info = thop.profile(probe, inputs=(torch.zeros(1, *input_shape),), verbose=False,
                                  ret_layer_info=True)
    flat = {}

    def walk(tree, prefix):
        for key, (ops, _params, children) in tree.items():
            name = prefix + key
            if name in types:
                flat[name] = (types[name], float(ops))
            walk(children, name + ".")

    walk(info, "")
    return flat


def layer_macs_frame(base_model, pruned_model, *, input_shape=None):
    """Per-layer MACs (thop) of the base and the pruned model, for every Conv/Linear layer.

    Args:
        base_model: The unpruned model.
        pruned_model: The pruned model (e.g. ``space.materialize(pick["genome"])``) or a
            ``(space, genome)`` pair (the genome may be a picked row).
        input_shape: One input's shape without the batch, e.g. ``(1, 28, 28)``; default: the
            model's ``input_shape`` attribute (zoo models carry it).

    Returns:
        A DataFrame with ``layer, type, macs_base, macs_pruned, ratio``, in module order.
    """
    from torch import nn

    from moprune.retraining import _candidate_model

    if not isinstance(base_model, nn.Module):
        raise invalid_value("base_model", "an nn.Module", type(base_model).__name__)
    pruned_model = _candidate_model(pruned_model)
    if input_shape is None:
        input_shape = getattr(base_model, "input_shape", None)
        if input_shape is None:
            raise MopruneValueError("input_shape must be given for models without an input_shape attribute")
    input_shape = tuple(input_shape)
    base, pruned = _layer_macs(base_model, input_shape), _layer_macs(pruned_model, input_shape)
    rows = []
    for name, (kind, macs) in base.items():
        after = pruned.get(name, (kind, 0.0))[1]
        rows.append({"layer": name, "type": kind, "macs_base": macs, "macs_pruned": after,
                     "ratio": after / macs if macs else np.nan})
    return pd.DataFrame(rows, columns=["layer", "type", "macs_base", "macs_pruned", "ratio"])


def plot_layer_macs(base_model, pruned_model, *, input_shape=None, ax=None):
    """Per-layer MACs before and after pruning, as grouped bars (GeneCAI fig. 8).

    Args:
        base_model, pruned_model, input_shape: See :func:`layer_macs_frame`.
        ax: Axes to draw on (default: a new figure).

    Returns:
        The Axes (x label ``"layer"``, y label ``"MACs"``).
    """
    import seaborn as sns

    frame = layer_macs_frame(base_model, pruned_model, input_shape=input_shape)
    long = frame.melt(id_vars="layer", value_vars=["macs_base", "macs_pruned"], var_name="model",
                      value_name="MACs")
    long["model"] = long["model"].map({"macs_base": "base", "macs_pruned": "pruned"})
    ax = _axes(ax)
    sns.barplot(data=long, x="layer", y="MACs", hue="model", ax=ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("MACs")
    ax.tick_params(axis="x", labelrotation=60)
    return ax
