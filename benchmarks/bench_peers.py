"""moprune's default search against the optimizers a user could reach for instead.

Every method searches the same :class:`moprune.PruningProblem` (the same evaluator settings, a
fresh evaluator and cache per run, objectives error and MACs, validation subset only) with the
same number of evaluations:

- ``moprune``: ``moprune.search(problem, n_evals=N, seed=s)`` with no options (the default);
- ``moprune-notilt``: the default with ``tilt_fraction=0.0`` (no parameter-tilted twins in its
  first population: the default before 2026-12-06; an ablation, not a peer);
- ``moprune-noscreen``: the default with ``screen=False`` (every candidate measured on all the
  validation images, none stopped early as dominated: the default before 2026-12-06, session 14;
  an ablation, not a peer);
- ``moprune-noconfirm``: the default with ``confirm=False`` (the candidates that could enter the
  front are not measured again on the confirmation images: the default before 2026-12-06,
  session 16; an ablation, not a peer);
- ``moprune-nsga2``: ``moprune.search(problem, "nsga2", ...)`` (the default before 2026-12-01);
- ``random``: ``moprune.search(problem, "random", ...)``;
- ``optuna-tpe``: Optuna's ``TPESampler(multivariate=True, seed=s)`` (ratio encodings only: one
  float per group; on 1,000+ binary genes it is impractically slow);
- ``optuna-nsga2``: Optuna's ``NSGAIISampler(seed=s)`` (floats for ratios, a 0/1 categorical
  per channel for binary genomes);
- ``uniform``: the same keep ratio in every group, channels ranked by L1 norm, at ``--sweep``
  evenly spaced ratios (what a plain Torch-Pruning user does; no search, fewer evaluations).

Reported per model, encoding, method and seed: hypervolume of the whole box (reference point
(1, 1)); hypervolume of the region within 10 points of the base error (reference point
(base error + 0.10, 1), normalised to that box); the same with errors clipped at the base error,
normalised to the box between the base error and 10 points above it (``hv_band``: models scoring
better than the base on the validation subset earn nothing extra; see :func:`metrics`); the
smallest MACs within 0.5, 1 and 2 points of the base accuracy. Each at equal evaluations (all ``N``) and at equal time (each method's
candidates finished within the shortest method's time for that seed; time includes the
optimizer's own overhead; ``--clock cpu`` measures this process's CPU time instead of wall
time, for a machine shared with other jobs; ``--repeats K`` runs each search K times and keeps the
fastest clock, as the same search's CPU time varies by up to a fifth on these machines). ``uniform`` is left out of the equal-time table (it stops early).
With ``--out P``, every candidate's (error, MACs, time) goes to ``P_points.csv.gz`` for re-analysis.

The evaluator holds confirmation images by default (``Evaluator(confirm_samples="auto")``: as
many again as the subset, three times as many at 1,000 evaluations or more:
``Evaluator.fit_confirmation``), on which only the default search measures the candidates that could
enter its front; a confirmed candidate's error in these figures is then over both sets of images
(``--confirm-samples none`` leaves them out). ``--heldout`` measures each run's front again on
the validation images outside the subset and the confirmation images (``heldout_*`` columns, and
``claim_1_*``: whether the smallest model the run offers within 1 point still is held out).
By default every seed searches the same draw of validation images (subset, confirmation and
held-out images all drawn with seed 0), so the seeds vary the searches but not the images: a
draw that happens to flatter one family of models does so in every seed. ``--images-per-seed``
draws them with each run's seed instead.

Then, with ``--retrain``: for the first seed of each model (every seed with ``--retrain-all-seeds``),
the most accurate fully measured candidate of the default search (and of each of ``--retrain-methods``)
at or below each MACs target (about 10% and 5%; ``pick(..., "target_macs")``) and the uniform
model with the nearest MACs (with ``--retrain-twins``: the largest uniform model at or below the
target, from a grid of 400 keep ratios, and each search's pick at or below its MACs; with
``--retrain-pick largest`` the pick is the search's largest candidate there, not its most
accurate) are retrained with the same budget (``--retrain-epochs`` at
``--retrain-lr`` on the training split, no distillation); their test accuracy is reported, and
the pick's lead over the uniform model (mean and standard error over the seeds).

Run (from the repository root; Optuna comes with ``pip install -e ".[bench]"``)::

    .venv/bin/python benchmarks/bench_peers.py --models mnist_cnn:binary mnist_cnn:ratio \
        --seeds 0 1 2 3 4 --evals 300 --out benchmarks/results/bench_peers
"""

import argparse
import os
import platform
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from pymoo.util.nds.non_dominated_sorting import find_non_dominated
from torch.utils.data import TensorDataset

import moprune
from moprune.cli.config import parse_option
from moprune.io import atomic_path
from moprune.operators.pruning import uniform_costs, uniform_genome
from moprune.results.indicators import hypervolume

ABLATIONS = ("moprune-notilt", "moprune-noscreen", "moprune-noconfirm")
"""The default with one of its parts off: reported, but not counted as a peer to beat."""

METHODS = ("moprune", "moprune-notilt", "moprune-noscreen", "moprune-noconfirm", "moprune-nsga2", "random", "optuna-tpe", "optuna-nsga2", "uniform")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall time, or the CPU time of this process (all its threads: torch's and the optimizer's).
On a machine shared with other jobs, CPU time is what the wall time of an idle machine would be."""
now = CLOCKS["wall"]


class TimedEvaluator(moprune.Evaluator):
    """An evaluator that stamps the time (``--clock``) at which each candidate finished."""

    def __init__(self, *args, clock, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.stamps = []

    def evaluate(self, space, X, error_bounds=None, confirm_limits=None, pooled_bounds=None):
        records = super().evaluate(space, X, error_bounds, confirm_limits, pooled_bounds)
        self.stamps.extend([now() - self.clock[0]] * len(records))
        return records


HELDOUT_BN_BATCHES = 10
"""Batches of 250 training images the held-out measurement re-estimates BatchNorm on, whatever ``--bn-batches``."""


def build(model_name, encoding, splits, samples, threads, data="mnist", bn_batches=None, heldout_exclude=None,
          confirm_samples="auto", n_evals=None):
    """Model, space, a problem factory (a fresh evaluator per run) and a held-out evaluator factory."""
    model = moprune.pretrained(model_name, progress=False, data=data)
    space = moprune.ChannelSpace(model, encoding=encoding)
    bn = moprune.evaluation.evaluator.has_batchnorm(model)
    # the same proxy for every peer: BN re-estimation only
    settings = dict(num_threads=threads, train_data=splits.train if bn else None,
                    n_train_samples=5000 if bn else None, finetune=None)
    search_bn = {} if bn_batches is None else {"bn_batches": bn_batches}
    # only the default search measures on them (its front's entrants); peers ignore them
    search_bn["confirm_samples"] = confirm_samples
    # as many as the default search confirms on with this budget (Evaluator.fit_confirmation)
    confirmed = moprune.Evaluator(splits.val, n_samples=samples,
                                  confirm_samples=confirm_samples).fit_confirmation(n_evals)

    def make_problem(clock, image_seed=0):
        """A fresh problem; ``image_seed`` draws its validation subset and confirmation images."""
        evaluator = TimedEvaluator(splits.val, n_samples=samples, clock=clock, seed=image_seed, **settings,
                                   **search_bn)
        return moprune.PruningProblem(space, evaluator, objectives=("error", "macs"))

    def make_heldout(image_seed=0):
        """An evaluator of the validation images outside the search's subset, and its base accuracy."""
        # a prefix of one seeded order: the search's subset, then its confirmation images
        subset = moprune.Evaluator(splits.val, n_samples=heldout_exclude or samples + (confirmed or 0),
                                   seed=image_seed)
        evaluator = moprune.Evaluator(heldout_split(subset, splits.val), n_samples=None,
                                      bn_batches=HELDOUT_BN_BATCHES, bn_batch_size=250, seed=image_seed,
                                      **settings)
        return evaluator, evaluator.evaluate_model(model)

    return model, space, make_problem, make_heldout


def heldout_split(evaluator, val):
    """The validation images outside ``evaluator``'s subset (never the test split)."""
    in_subset = {x.numpy().tobytes() for x in evaluator.val_subset.tensors[0]}
    images, labels = val.tensors
    held = torch.tensor([x.numpy().tobytes() not in in_subset for x in images])
    return TensorDataset(images[held], labels[held])


def heldout_metrics(space, archive, keep, base_accuracy, heldout):
    """The run's validation front within 10 points of the base, measured again on held-out images.

    What a user of the run is offered is its front on the search's subset; on held-out images a
    model that beat the base there by an image or two usually does not. Returns
    :func:`metrics`' region, band and within-0.5/1-point figures of the re-measured front, each
    prefixed ``heldout_``, against the base accuracy on the same images; and whether the run's
    claims hold: the smallest front model within 1 point of the base by the run's own accuracy,
    its drop held out (``claim_1_heldout_drop``, points) and whether that is within 1 point too
    (``claim_1_holds``).
    """
    evaluator, held_base = heldout
    base_error = 1.0 - base_accuracy
    entries = [e for e, k in zip(archive, keep) if k and np.isfinite(e.accuracy) and not getattr(e, "screened", False)
               and 1.0 - e.accuracy < base_error + 0.10]
    if not entries:
        return {**{f"heldout_{k}": (0.0 if k.startswith("hv") else np.nan)
                   for k in ("hv_region", "hv_band", "macs_within_0.5", "macs_within_1")},
                "claim_1_heldout_drop": np.nan, "claim_1_holds": np.nan}
    F = np.array([[1.0 - e.accuracy, e.macs_ratio] for e in entries])
    front = [entries[i] for i in find_non_dominated(F)]
    records = evaluator.evaluate(space, np.array([e.genome for e in front]))
    points = np.array([[1.0 - r.accuracy if np.isfinite(r.accuracy) else 1.0, e.macs_ratio]
                       for e, r in zip(front, records)])
    m = metrics(points, held_base)
    out = {f"heldout_{k}": m[k] for k in ("hv_region", "hv_band", "macs_within_0.5", "macs_within_1")}
    claimed = [i for i, e in enumerate(front) if 100.0 * (base_accuracy - e.accuracy) <= 1.0 + 1e-9]
    drop = np.nan
    if claimed:
        i = min(claimed, key=lambda j: front[j].macs_ratio)
        drop = 100.0 * (held_base - (1.0 - points[i, 0]))
    out.update(claim_1_heldout_drop=drop, claim_1_holds=float(drop <= 1.0) if np.isfinite(drop) else np.nan)
    return out


def run_optuna(problem, sampler, n_evals, encoding):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = problem.space
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        if encoding == "binary":
            x = np.array([trial.suggest_categorical(f"b{i}", [0, 1]) for i in range(space.n_var)], dtype=bool)
        else:
            x = np.array([trial.suggest_float(f"r{i}", 0.0, 1.0) for i in range(space.n_var)])
        x = space.repair()._do(None, x[None])[0]
        F = problem.evaluate(x[None], return_as_dictionary=True)["F"][0]
        return float(F[0]), float(F[1])

    study.optimize(objective, n_trials=n_evals)


def warm_up(methods):
    """Import what the methods use before any clock starts, so seed 0 pays no one-off import time.

    ``moprune.search`` is imported lazily (``moprune/__init__.py``) and Optuna's samplers import
    parts of themselves on their first trials; a few throwaway trials outside the clock load them.
    """
    import moprune.searching  # noqa: F401  (the lazy import behind moprune.search)

    if any(m.startswith("optuna") for m in methods):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for sampler in (optuna.samplers.TPESampler(multivariate=True, seed=0), optuna.samplers.NSGAIISampler(seed=0)):
            study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
            study.optimize(lambda t: (t.suggest_float("a", 0.0, 1.0), t.suggest_float("b", 0.0, 1.0)), n_trials=12)


def confirm_option(text):
    """``--confirm-samples``: ``auto``, ``none`` or a number of images."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    return int(text)


def search_option(text):
    """``KEY=VALUE`` of ``--option`` (the CLI's ``--algo-option`` reading); a bad one is an argparse error."""
    try:
        return parse_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("--algo-option", "--option")) from None


def run_method(method, make_problem, space, n_evals, seed, encoding, n_sweep, options=None, image_seed=0):
    import optuna

    clock = [now()]
    problem = make_problem(clock, image_seed)
    _ = problem.base_accuracy  # measured before the clock starts, as search() does
    clock[0] = now()
    result = None
    if method == "moprune":
        result = moprune.search(problem, n_evals=n_evals, seed=seed, **(options or {}))
    elif method == "moprune-notilt":  # the default without its first population's tilted twins (ablation)
        moprune.search(problem, n_evals=n_evals, seed=seed, **{**(options or {}), "tilt_fraction": 0.0})
    elif method == "moprune-noscreen":  # the default measuring every candidate in full (ablation)
        moprune.search(problem, n_evals=n_evals, seed=seed, **{**(options or {}), "screen": False})
    elif method == "moprune-noconfirm":  # the default without confirmation images (ablation)
        moprune.search(problem, n_evals=n_evals, seed=seed, **{**(options or {}), "confirm": False})
    elif method == "moprune-nsga2":
        moprune.search(problem, "nsga2", n_evals=n_evals, seed=seed)
    elif method == "random":
        moprune.search(problem, "random", n_evals=n_evals, seed=seed)
    elif method == "optuna-tpe":
        run_optuna(problem, optuna.samplers.TPESampler(multivariate=True, seed=seed), n_evals, encoding)
    elif method == "optuna-nsga2":
        run_optuna(problem, optuna.samplers.NSGAIISampler(seed=seed), n_evals, encoding)
    elif method == "uniform":
        ratios = np.linspace(1.0 / n_sweep, 1.0, n_sweep)
        problem.evaluate(space.genomes_from_ratios(np.repeat(ratios[:, None], len(space.group_slices), 1)))
    wall = now() - clock[0]
    archive = problem.archive
    points = np.array([[1.0 - e.accuracy if np.isfinite(e.accuracy) else 1.0, e.macs_ratio] for e in archive])
    return {"points": points, "stamps": np.asarray(problem.evaluator.stamps), "wall": wall,
            "base_accuracy": problem.base_accuracy, "archive": archive, "result": result}


def fastest(repeats):
    """The repeat of one search that took the least time (``--repeats``): the same candidates, less machine noise.

    Every search here is seeded, so its repeats evaluate the same candidates in the same order;
    only their clocks differ, by what else the machine was doing. Slowdowns only add, so the
    fastest repeat is the closest to the search's own cost (as ``timeit`` takes the minimum).
    """
    first = repeats[0]
    for other in repeats[1:]:
        if not np.array_equal(other["points"], first["points"]):
            raise RuntimeError("a repeated search evaluated other candidates: it is not deterministic")
    return min(repeats, key=lambda r: r["wall"])


def metrics(points, base_accuracy):
    """The report's figures for one run's (error, MACs ratio) points.

    ``hv_region`` counts everything below the reference error, including models that score better
    than the base on the validation subset (a strip that grows with how many large models a
    method samples, mostly subset noise: one image of 1,000 is 0.1 point). ``hv_band`` is the
    same with errors clipped at the base error and normalised to the box between the base error
    and 10 points above it: how small the models within 0 to 10 points of the base are, nothing
    for beating the base.
    """
    base_error = 1.0 - base_accuracy
    out = {"n": len(points), "hv_box": hypervolume(points) if len(points) else 0.0}
    ref = np.array([base_error + 0.10, 1.0])
    inside = points[(points[:, 0] < ref[0])] if len(points) else points
    out["hv_region"] = hypervolume(inside, ref_point=ref) if len(inside) else 0.0
    clipped = np.column_stack([np.maximum(inside[:, 0], base_error), inside[:, 1]]) if len(inside) else inside
    out["hv_band"] = hypervolume(clipped - [base_error, 0.0], ref_point=[0.10, 1.0]) if len(clipped) else 0.0
    for drop in (0.5, 1.0, 2.0):
        ok = points[:, 1][100 * (points[:, 0] - base_error) <= drop + 1e-9] if len(points) else []
        out[f"macs_within_{drop:g}"] = float(np.min(ok)) if len(ok) else np.nan
    return out


HELDOUT = {"heldout_hv_region": "ho_region", "heldout_hv_band": "ho_band", "heldout_macs_within_1": "ho_macs_1"}
"""``--heldout``'s columns and their names in the summaries."""


CLAIMS = {"claim_1_heldout_drop": "claim1_ho_drop", "claim_1_holds": "claim1_holds"}
"""``--heldout``'s columns on the run's own claims (summaries only): the smallest model it offers within 1 point,
its drop held out (points) and the share of seeds where that is within 1 point too."""


def summarize(df, by_time):
    rows = df[df["equal"] == ("time" if by_time else "evals")]
    extra = {name: (column, "mean") for column, name in {**HELDOUT, **CLAIMS}.items() if column in rows}
    agg = rows.groupby(["model", "method"]).agg(
        seeds=("seed", "count"), n=("n", "mean"), wall_s=("wall", "mean"),
        hv_box=("hv_box", "mean"), hv_region=("hv_region", "mean"), hv_band=("hv_band", "mean"),
        macs_0_5=("macs_within_0.5", "mean"), macs_1=("macs_within_1", "mean"), macs_2=("macs_within_2", "mean"),
        **extra)
    return agg


def wins(df, equal):
    """Seeds in which the default beats every other method (HV region / band higher, MACs within 1 point lower).

    With ``--heldout``'s columns, the same three counts on held-out images too (``ho_*_best``).
    """
    rows = df[(df["equal"] == equal) & (df["method"] != "uniform" if equal == "time" else True)]
    counts = {"hv_region_best": ("hv_region", True), "hv_band_best": ("hv_band", True),
              "macs_within_1_best": ("macs_within_1", False)}
    counts.update({f"{name}_best": (column, not column.endswith("within_1"))
                   for column, name in HELDOUT.items() if column in rows})
    out = []
    for model, sub in rows.groupby("model"):
        if "moprune" not in set(sub["method"]):  # a run of peers only, to be scored by variant_wins.py
            continue
        seeds = sorted(sub["seed"].unique())
        row = {"model": model, "equal": equal, "seeds": len(seeds), **dict.fromkeys(counts, 0)}
        for seed in seeds:
            s = sub[sub["seed"] == seed].set_index("method")
            others = s.drop(index=[m for m in s.index if m == "moprune" or m in ABLATIONS])
            for count, (column, higher) in counts.items():
                mine = s.loc["moprune", column]
                if higher:
                    row[count] += bool((mine > others[column]).all())
                else:  # a missing model is no model: the default needs one, peers without one lose
                    row[count] += bool((mine <= others[column].fillna(np.inf)).all())
        out.append(row)
    return pd.DataFrame(out)


def target_pick(archive, target, rule="accuracy"):
    """A fully measured candidate at or below ``target`` MACs.

    ``rule="accuracy"``: the most accurate (``pick(..., "target_macs")``); ``"largest"``: the one
    with the most MACs (ties: the more accurate), for a comparison at nearly equal MACs.
    """
    cands = [e for e in archive if np.isfinite(e.accuracy) and e.macs_ratio <= target
             and not getattr(e, "screened", False)]
    if rule == "largest":
        return max(cands, key=lambda e: (e.macs_ratio, e.accuracy)) if cands else None
    return max(cands, key=lambda e: (e.accuracy, -e.macs_ratio)) if cands else None


def uniform_at_most(space, target):
    """The largest uniform model (a grid of 400 keep ratios, ``uniform_costs``) with at most ``target`` MACs."""
    _, cost = uniform_costs(space)
    macs = np.asarray(cost["macs_ratio"], dtype=float)
    if not (macs <= target).any():
        raise ValueError(f"--targets: MACs ratios at or above the smallest uniform model's ({macs.min():.4f}) "
                         f"with --retrain-twins, got {target}")
    genome = uniform_genome(space, float(macs[macs <= target].max()))
    return SimpleNamespace(genome=genome, macs_ratio=float(space.cost(genome[None])["macs_ratio"][0]),
                           accuracy=float("nan"))


def archive_frame(archive):
    """The columns of :func:`moprune.to_frame` that :func:`moprune.race.race_contenders` reads, from an archive."""
    return pd.DataFrame({"macs_ratio": [e.macs_ratio for e in archive], "accuracy": [e.accuracy for e in archive],
                         "genome": [np.asarray(e.genome) for e in archive],
                         "screened": [bool(getattr(e, "screened", False)) for e in archive],
                         "error_message": [e.error for e in archive], "plan_key": [e.plan_key for e in archive]})


def race_pick(space, pick, archive, race, splits, epochs, lr, seed, retrain):
    """The model ``retrain_front(..., race=race)`` delivers for front point ``pick`` (its race, then its uniform twin).

    As :func:`moprune.retrain_front` does for each point: ``race`` contenders of the pick's size
    (no larger than its uniform twin at the nearest MACs) are raced by successive halving, the
    winner is retrained with the full budget and kept unless its uniform twin retrains better on
    validation. ``retrain(genome)`` retrains one genome (cached by the caller).

    Returns:
        ``(genome, source, retrained)``: the delivered model, where it came from and its
        :class:`moprune.RetrainResult`.
    """
    from moprune.race import race_contenders, successive_halving

    twin_genome = uniform_genome(space, float(pick.macs_ratio))
    twin_macs = float(space.cost(twin_genome[None, :])["macs_ratio"][0])
    contenders = race_contenders(space, np.asarray(pick.genome), race, history=archive_frame(archive), seed=seed,
                                 macs_ratio=min(float(pick.macs_ratio), twin_macs))
    budget = epochs * -(-len(splits.train) // 128)
    winner, _ = successive_halving(space, contenders, data=splits, budget_steps=budget, seed=seed, lr=lr)
    source, genome = contenders[winner]
    done, twin = retrain(genome), retrain(twin_genome)
    if twin.val_accuracy > done.val_accuracy:
        return twin_genome, "uniform", twin
    return genome, source, done


def retrain_outcomes(model_name, encoding, model, space, runs, splits, targets, epochs, lr, seed,
                     methods=("moprune",), twins=False, rule="accuracy", race=0, within=0, decompose=0,
                     reconstruct=None):
    """Test accuracy after equal retraining: each search's pick at a MACs target vs the uniform model at its MACs.

    The uniform model is the sweep's nearest to the pick in MACs or, with ``twins``, the largest
    uniform model at or below the target (a grid of 400 keep ratios), and each search's pick is
    then its candidate at or below that model's MACs chosen by ``rule`` (:func:`target_pick`):
    never larger than the model it is compared with. With ``race >= 2``, also what the user flow
    delivers for that pick (``<method>+race<N>`` rows, :func:`race_pick`), against the same
    uniform model; with ``within >= 2``, what :func:`moprune.retrain_within` delivers within the
    uniform model's MACs (``<method>+within<N>`` rows: a race at the budget's size, searches
    that return a :class:`moprune.SearchResult` only; ``<method>+within<N>d<K>`` with ``decompose``:
    K of the contenders channel-pruned and decomposed). The picks are retrained as :func:`moprune.retrain`
    does (``reconstruct``: ``None`` refits layers to the base model first where it has no BatchNorm); the uniform rows are
    plain uniform pruning, retrained from its inherited weights; with ``twins``, a ``reconstructed uniform``
    row shows what the refit alone does for the same uniform model.
    """
    rows, done_by_key = [], {}  # the same model retrained once (a uniform model can face several picks)
    uniform_archive = runs["uniform"]["archive"] if "uniform" in runs else None

    def retrain(genome, reconstruct=reconstruct):
        key = (space.decode(np.asarray(genome)).key, reconstruct)
        if key not in done_by_key:
            torch.manual_seed(seed)
            done_by_key[key] = moprune.retrain((space, genome), data=splits, base_model=model,
                                               epochs=epochs, lr=lr, seed=seed, reconstruct=reconstruct)
        return done_by_key[key]

    for target in targets:
        twin = uniform_at_most(space, target) if twins else None
        for method in methods:
            limit = twin.macs_ratio if twins else target
            pick = target_pick(runs[method]["archive"], limit, rule) if method in runs else None
            if pick is None:
                continue
            if twins:
                uni = twin
            else:
                uni = min(uniform_archive, key=lambda e: abs(np.log(e.macs_ratio) - np.log(pick.macs_ratio)))
            entries = [(method, pick, None, None), (f"uniform (vs {method})", uni, None, None)]
            if twins and reconstruct is not False and method == methods[0]:  # what reconstruction alone does for uniform pruning
                entries += [("reconstructed uniform", uni, None, None),
                            ("uniform (vs reconstructed uniform)", uni, None, None)]
            if race >= 2:
                genome, source, _ = race_pick(space, pick, runs[method]["archive"], race, splits, epochs, lr,
                                                 seed, retrain)
                raced = SimpleNamespace(genome=genome, accuracy=float("nan"),
                                        macs_ratio=float(space.cost(genome[None, :])["macs_ratio"][0]))
                entries += [(f"{method}+race{race}", raced, source, None),
                            (f"uniform (vs {method}+race{race})", uni, None, None)]
            if within >= 2 and runs[method].get("result") is not None:
                best = moprune.retrain_within(runs[method]["result"], limit, data=splits, base_model=model, race=within,
                                              decompose=decompose, epochs=epochs, lr=lr, seed=seed,
                                              reconstruct=reconstruct)
                genome = np.asarray(best["genome"])
                done = SimpleNamespace(test_accuracy=best["test_accuracy"], val_accuracy=best["accuracy"])
                if best.attrs["space"] is space:
                    done_by_key.setdefault((space.decode(genome).key, reconstruct), done)
                kept = SimpleNamespace(genome=genome, accuracy=float("nan"), macs_ratio=float(best["macs_ratio"]))
                name = f"{method}+within{within}" + (f"d{decompose}" if decompose else "")
                entries += [(name, kept, best["source"], done), (f"uniform (vs {name})", uni, None, None)]
            for name, entry, source, done in entries:
                # the uniform baseline is plain uniform pruning, as a Torch-Pruning user retrains it
                done = done or retrain(entry.genome, reconstruct=(False if name.startswith("uniform") else
                                                                  True if name == "reconstructed uniform" else reconstruct))
                rows.append({"model": f"{model_name}:{encoding}", "seed": seed, "target_macs": target,
                             "method": name, "macs_ratio": entry.macs_ratio, "search_val_accuracy": entry.accuracy,
                             "source": source, "val_accuracy": done.val_accuracy, "test_accuracy": done.test_accuracy})
                print(f"  retrained {name:8s} at {100 * entry.macs_ratio:5.2f}% MACs{f' ({source})' if source else ''}: "
                      f"test {100 * done.test_accuracy:.2f}%", flush=True)
    return rows


def retrain_summary(frame):
    """Per model, target and search: test accuracy of the pick minus the uniform model's, over seeds."""
    out = []
    picks = frame[~frame["method"].str.startswith("uniform")]
    for (model, target, method), group in picks.groupby(["model", "target_macs", "method"], sort=False):
        uni = frame[frame["method"] == f"uniform (vs {method})"]
        uni = uni[(uni["model"] == model) & (uni["target_macs"] == target)].set_index("seed")["test_accuracy"]
        diff = 100 * (group.set_index("seed")["test_accuracy"] - uni).dropna()
        out.append({"model": model, "target_macs": target, "method": method, "seeds": len(diff),
                    "mean_macs_pct": 100 * group["macs_ratio"].mean(), "mean_test_pct": 100 * group["test_accuracy"].mean(),
                    "diff_points": diff.mean(),
                    "se": diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan"),
                    "ahead_or_level": int((diff >= 0).sum())})
    return pd.DataFrame(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist_cnn:binary", "mnist_cnn:ratio"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sweep", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--heldout", action="store_true",
                        help="also measure each run's validation front on the validation images outside the "
                             "subset and score region, band and within-1-point on them (heldout_* columns)")
    parser.add_argument("--images-per-seed", action="store_true",
                        help="draw each seed's validation subset, confirmation and held-out images with that seed "
                             "(default: one draw, seed 0, for every seed: the seeds then vary the searches only)")
    parser.add_argument("--bn-batches", type=int, default=None,
                        help="batches the search's evaluators re-estimate BatchNorm on (default: the Evaluator's)")
    parser.add_argument("--heldout-exclude", type=int, default=None,
                        help="held-out images: those outside the seeded subset of this many (default --samples; "
                             "larger to compare runs of different --samples on the same held-out images)")
    parser.add_argument("--confirm-samples", type=confirm_option, default="auto",
                        help="validation images beyond the subset on which the default search confirms the "
                             "candidates that could enter its front (Evaluator(confirm_samples=...): 'auto', the "
                             "Evaluator's default, 'none' or a number); the held-out images are outside both")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each search this many times and keep the fastest clock (equal-time figures "
                             "with less machine noise; the candidates are the same)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--retrain-lr", type=float, default=0.01)
    parser.add_argument("--retrain-all-seeds", action="store_true",
                        help="retrain the picks of every seed (default: the first seed only)")
    parser.add_argument("--retrain-methods", nargs="+", default=["moprune"],
                        help="searches whose picks are retrained, each beside the uniform model at its MACs")
    parser.add_argument("--retrain-twins", action="store_true",
                        help="compare at equal MACs: the largest uniform model at or below each target (a grid of 400 "
                             "keep ratios) and each search's pick (--retrain-pick) at or below its MACs")
    parser.add_argument("--retrain-pick", choices=["accuracy", "largest"], default="accuracy",
                        help="each search's pick at or below the target: its most accurate candidate (default) "
                             "or its largest (nearly equal MACs with --retrain-twins)")
    parser.add_argument("--retrain-race", type=int, default=0, metavar="N",
                        help="also retrain what retrain_front(..., race=N) delivers for each pick (N >= 2 contenders)")
    parser.add_argument("--retrain-within", type=int, default=0, metavar="N",
                        help="also retrain what moprune.retrain_within(result, target, race=N) delivers (the default "
                             "search's run; the target is the uniform model's MACs with --retrain-twins)")
    parser.add_argument("--retrain-decompose", type=int, default=0, metavar="K",
                        help="with --retrain-within N: K of the N contenders are channel-pruned and decomposed "
                             "models (retrain_within(..., decompose=K))")
    parser.add_argument("--retrain-plain", action="store_true",
                        help="retrain every model from its inherited weights (retrain(..., reconstruct=False)), "
                             "the protocol of sessions before 26")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.10, 0.05])
    parser.add_argument("--out", default=None, help="prefix of the CSV/TXT files written")
    parser.add_argument("--data", choices=["mnist", "fashion-mnist"], default="mnist",
                        help="data set (the baselines are trained on it; Fashion-MNIST: `moprune data fetch fashion-mnist`)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=search_option,
                        help="an option of the default search (a TOML value), e.g. max_imbalance=2")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="time measured for 'equal time': wall, or this process's CPU time (a shared machine)")
    args = parser.parse_args(argv)
    options = dict(args.option)
    global now
    now = CLOCKS[args.clock]

    splits = moprune.load_fashion_mnist() if args.data == "fashion-mnist" else moprune.load_mnist()
    rows, retrained, points = [], [], []
    if args.repeats < 1:
        parser.error(f"--repeats: a number of runs >= 1, got {args.repeats}")
    if args.retrain_race == 1 or args.retrain_race < 0:
        parser.error(f"--retrain-race: 0 (no race) or at least 2 contenders, got {args.retrain_race}")
    if args.retrain_within == 1 or args.retrain_within < 0:
        parser.error(f"--retrain-within: 0 (none) or at least 2 contenders, got {args.retrain_within}")
    if args.retrain_decompose and not 0 < args.retrain_decompose < args.retrain_within:
        parser.error(f"--retrain-decompose: fewer than --retrain-within's {args.retrain_within} contenders, "
                     f"got {args.retrain_decompose}")
    warm_up(args.methods)
    header = (f"# bench_peers: {' '.join(sys.argv[1:])}\n# {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, moprune {moprune.__version__}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}, clock: {args.clock}, data: {args.data}")
    print(header, flush=True)
    for spec in args.models:
        model_name, encoding = spec.split(":")
        model, space, make_problem, make_heldout = build(model_name, encoding, splits, args.samples, args.threads,
                                                         args.data, args.bn_batches, args.heldout_exclude,
                                                         args.confirm_samples, args.evals)
        heldout = make_heldout() if args.heldout and not args.images_per_seed else None
        for seed in args.seeds:
            image_seed = seed if args.images_per_seed else 0
            if args.heldout and args.images_per_seed:  # each seed's own held-out images
                heldout = make_heldout(image_seed)
            runs = {}
            for method in args.methods:
                if method == "optuna-tpe" and encoding == "binary":
                    continue
                repeats = [run_method(method, make_problem, space, args.evals, seed, encoding, args.sweep,
                                      options, image_seed) for _ in range(args.repeats)]
                runs[method] = fastest(repeats)
                r = runs[method]
                m = metrics(r["points"], r["base_accuracy"])
                if heldout is not None:
                    m.update(heldout_metrics(space, r["archive"], np.ones(len(r["points"]), bool),
                                             r["base_accuracy"], heldout))
                rows.append({"model": spec, "method": method, "seed": seed, "equal": "evals", "wall": r["wall"], **m})
                points.append(pd.DataFrame({"model": spec, "method": method, "seed": seed, "error": r["points"][:, 0],
                                            "macs_ratio": r["points"][:, 1], "time": r["stamps"],
                                            "base_accuracy": r["base_accuracy"]}))
                print(f"{spec} seed {seed} {method:14s} {r['wall']:6.1f} s  hv_box {m['hv_box']:.4f}  "
                      f"hv_region {m['hv_region']:.4f}  hv_band {m['hv_band']:.4f}  "
                      f"macs@1pt {m['macs_within_1']:.4f}", flush=True)
            budget = min(r["wall"] for k, r in runs.items() if k != "uniform")
            for method, r in runs.items():
                if method == "uniform":
                    continue
                keep = r["stamps"] <= budget + 1e-9
                m = metrics(r["points"][keep], r["base_accuracy"])
                if heldout is not None:
                    m.update(heldout_metrics(space, r["archive"], keep, r["base_accuracy"], heldout))
                rows.append({"model": spec, "method": method, "seed": seed, "equal": "time", "wall": budget, **m})
            if (args.retrain and (args.retrain_all_seeds or seed == args.seeds[0])
                    and ("uniform" in runs or args.retrain_twins)):
                retrained += retrain_outcomes(model_name, encoding, model, space, runs, splits, args.targets,
                                              args.retrain_epochs, args.retrain_lr, seed, args.retrain_methods,
                                              twins=args.retrain_twins, rule=args.retrain_pick,
                                              race=args.retrain_race, within=args.retrain_within,
                                              reconstruct=False if args.retrain_plain else None,
                                              decompose=args.retrain_decompose)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    report = [header, "", "## equal evaluations (means over seeds)", summarize(df, False).round(4).to_string(),
              "", f"## equal {args.clock} time (means over seeds; column wall_s is {args.clock} seconds)", summarize(df, True).round(4).to_string(), "",
              "## seeds where the default is best against every peer",
              pd.concat([wins(df, "evals"), wins(df, "time")]).to_string(index=False)]
    if retrained:
        report += ["", "## after equal retraining (test split)", pd.DataFrame(retrained).round(4).to_string(index=False),
                   "", "## pick minus the uniform model at its MACs, test points (mean, standard error, seeds ahead)",
                   retrain_summary(pd.DataFrame(retrained)).round(3).to_string(index=False)]
    text = "\n".join(report)
    print(text)
    if args.out:  # each file written beside itself and renamed: never half-written
        frames = {".csv": df, "_points.csv.gz": pd.concat(points)}  # points: every candidate, for re-analysis
        if retrained:
            frames["_retrained.csv"] = pd.DataFrame(retrained)
        for suffix, frame in frames.items():
            with atomic_path(args.out + suffix) as tmp:
                frame.to_csv(tmp, index=False)
        with atomic_path(args.out + ".txt") as tmp, open(tmp, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
