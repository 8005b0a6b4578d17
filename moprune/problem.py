"""The pymoo problem of a pruning search: objectives and constraints of a population.

:class:`PruningProblem` is thin: costs come from the space (analytic, no network), accuracies
from the evaluator (the only place that runs networks). Every call evaluates a whole population,
so the evaluator can cache and, later, parallelise. Every candidate requested lands in
:attr:`PruningProblem.archive` as a :class:`moprune.archive.Evaluation`.

Example:
    >>> problem = PruningProblem(space, Evaluator(splits.val), objectives=("error", "macs"))
    >>> result = moprune.search(problem, "nsga2", pop_size=20, n_gen=10, seed=0)
"""

import inspect
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from pymoo.core.problem import Problem
from torch import nn

from moprune.archive import Evaluation
from moprune.evaluation.evaluator import Evaluator, has_batchnorm
from moprune.exceptions import invalid_value
from moprune.scoring import Scoring, make_scoring
from moprune.space.base import Plan, Space
from moprune.space.channels import ChannelSpace
from moprune.validation import check_bool, check_real

OBJECTIVES = ("error", "macs", "params", "sparsity")
"""The objectives a problem can minimise."""


def _takes(evaluator, argument):
    """Whether ``evaluator.evaluate`` takes ``argument`` (an evaluator of the user's own may not: no screening)."""
    try:
        return argument in inspect.signature(evaluator.evaluate).parameters
    except (TypeError, ValueError):
        return False


_COST_COLUMNS = {"macs": ("macs_ratio", 1.0), "params": ("params_ratio", 1.0), "sparsity": ("sparsity", -1.0)}
"""Cost objective -> (archive/cost key, sign making smaller better)."""

SCORE_OBJECTIVE = "neg_score"
"""Name of the objective a scalarized problem minimises (``-score``)."""


def _fewest_cheaper(reference, errors, columns, cost):
    """Per candidate of ``cost``, the fewest ``errors`` of a ``reference`` entry at most as costly (or ``None``)."""
    n = len(np.asarray(cost["macs_ratio"]))
    if not reference or not columns:
        return [None] * n
    R = np.array([[sign * float(getattr(e, key)) for key, sign in columns] for e in reference])
    C = np.column_stack([sign * np.asarray(cost[key], dtype=float) for key, sign in columns])
    cheaper = (R[None, :, :] <= C[:, None, :]).all(axis=2)  # candidate x reference
    fewest = np.where(cheaper, errors[None, :], np.iinfo(np.int64).max).min(axis=1)
    return [int(b) if cheaper[i].any() else None for i, b in enumerate(fewest)]


def _check_objectives(objectives):
    if isinstance(objectives, str):
        objectives = (objectives,)
    try:
        objectives = tuple(objectives)
    except TypeError:
        raise invalid_value("objectives", f"a non-empty sequence of names among {list(OBJECTIVES)}",
                            objectives) from None
    if not objectives or any(o not in OBJECTIVES for o in objectives) or len(set(objectives)) != len(objectives):
        raise invalid_value("objectives", f"a non-empty sequence of distinct names among {list(OBJECTIVES)}",
                            objectives)
    return objectives


def _check_batchnorm(space, evaluator):
    """Refuse a BatchNorm model whose pruned candidates would keep stale BN statistics.

    Channel pruning changes what every BatchNorm layer sees; without re-estimating its running
    statistics, pruned candidates collapse and the search ranks noise. With the default
    ``bn_recalibration="auto"`` the evaluator needs training data to re-estimate them.
    """
    prunes = isinstance(space, ChannelSpace) or getattr(space, "prunes_channels", False)
    if getattr(evaluator, "bn_recalibration", None) != "auto" or not prunes:
        return  # unstructured masks keep every channel: the statistics stay meaningful
    if evaluator.train_subset is None and has_batchnorm(space.model):
        raise invalid_value(
            "evaluator", "an Evaluator with train_data=... (this model has BatchNorm layers whose statistics "
            "must be re-estimated for every channel-pruned candidate), or bn_recalibration=False to skip that "
            "knowingly", "an Evaluator without train_data")


class PruningProblem(Problem):
    """A pymoo problem whose decision vector is a genome of ``space``.

    Objectives, all minimised: ``"error"`` (1 - accuracy), ``"macs"`` (ratio to the base model),
    ``"params"`` (ratio to the base model) and ``"sparsity"`` (1 - sparsity). With
    ``max_accuracy_drop`` set, one inequality constraint
    ``G = 100 * (base_accuracy - accuracy) - max_accuracy_drop <= 0`` (points; the accuracy
    threshold of documents 003 and 004).

    A candidate whose evaluation fails gets the worst values (accuracy 0, cost ratios 1, no
    sparsity) and its error message in the archive; the search goes on.

    Pickling: the problem pickles its space (with the base model) and its evaluator, whose
    datasets are left out (see :mod:`moprune.evaluation.evaluator`).

    Args:
        space: A :class:`moprune.space.Space`.
        evaluator: A :class:`moprune.Evaluator`.
        objectives: Names among :data:`OBJECTIVES`.
        max_accuracy_drop: Accuracy constraint in points in [0, 100], or ``None``.

    Attributes:
        space, evaluator, objectives, max_accuracy_drop: As given.
        archive: Every :class:`moprune.archive.Evaluation` requested so far, in order.
        generation: The current generation (0-based), set by :func:`moprune.search`.
        screen: Stop measuring a candidate once it has made more validation errors than an
            archived model at most as costly in every cost objective made in all: it is
            dominated whatever the rest of the images say, so the front is the same (default
            ``False``; the default search sets it on its view). Its archive entry is marked
            ``screened`` and its accuracy is an upper bound. The evaluator's validation images
            are then ordered hardest first for the base model (:meth:`moprune.Evaluator.rank_images`),
            so that most such candidates stop after a few batches. An evaluator whose
            ``evaluate`` takes no ``error_bounds`` (one of the user's own) measures everything.
        confirm: Measure the candidates that could enter the front again on the evaluator's
            confirmation images (``Evaluator(confirm_samples=...)``; default ``False``, the
            default search sets it on its view): those within :attr:`confirm_drop` points of the
            base that no archived model at most as costly beats on the subset. Their archived
            accuracy is then over both sets of images (see :class:`moprune.archive.Evaluation`):
            a model lucky on a small subset does not keep its place on the front by luck.
        confirm_drop: Accuracy points below the base within which candidates are confirmed.

    Raises:
        MopruneValueError: Unknown objectives or a threshold outside [0, 100].
    """

    screen = False
    confirm = False
    confirm_drop = 5.0

    def __init__(self, space: Space, evaluator: Evaluator, *, objectives: Union[str, Sequence[str]] = ("error", "macs"),
                 max_accuracy_drop: Optional[float] = None) -> None:
        self.objectives = _check_objectives(objectives)
        self.max_accuracy_drop = check_real("max_accuracy_drop", max_accuracy_drop, low=0, high=100,
                                            allow_none=True, unit="accuracy points")
        for name in ("decode", "materialize", "cost", "repair", "n_var"):
            if not hasattr(space, name):
                raise invalid_value("space", "a moprune.space.Space", type(space).__name__)
        if not hasattr(evaluator, "evaluate"):
            raise invalid_value("evaluator", "a moprune.Evaluator", type(evaluator).__name__)
        _check_batchnorm(space, evaluator)
        self.space = space
        self.evaluator = evaluator
        self.archive = []
        self.generation = 0
        self._base_accuracy = None
        self._base_confirmed = None
        self._reference_start = 0  # archive entries before it were measured on other weights (rebase)
        super().__init__(n_var=space.n_var, n_obj=self._n_obj(),
                         n_ieq_constr=0 if self.max_accuracy_drop is None else 1,
                         xl=np.asarray(space.xl, dtype=float), xu=np.asarray(space.xu, dtype=float),
                         vtype=space.vtype, elementwise=False)

    def _n_obj(self):
        return len(self.objectives)

    # ------------------------------------------------------------ base model
    @property
    def base_accuracy(self) -> float:
        """Accuracy of the unpruned model on the evaluator's subset (measured once, lazily)."""
        if self._base_accuracy is None:
            self._base_accuracy = float(self.evaluator.evaluate_model(self.space.model))
        return self._base_accuracy

    @property
    def base_accuracy_confirmed(self) -> float:
        """Accuracy of the unpruned model on the subset and the confirmation images together.

        Measured once per number of confirmation images (see :meth:`moprune.Evaluator.fit_confirmation`).
        """
        root = getattr(self, "parent", self)
        n_images = len(root.evaluator.confirm_subset)
        measured = getattr(root, "_base_confirmed", None)
        if not isinstance(measured, tuple) or measured[0] != n_images:
            measured = (n_images, float(root.evaluator.evaluate_model(root.space.model, confirmation=True)))
            root._base_confirmed = measured
        return measured[1]

    def _confirms(self):
        """Whether candidates that could enter the front are measured on confirmation images."""
        return (self.confirm and "error" in getattr(self, "parent", self).objectives
                and _takes(self.evaluator, "confirm_limits")
                and getattr(self.evaluator, "confirm_subset", None) is not None)

    @property
    def base_macs(self) -> float:
        """MACs of the unpruned model."""
        return self.space.base_macs

    @property
    def base_params(self) -> float:
        """Parameters of the unpruned model."""
        return self.space.base_params

    @property
    def constrained(self) -> bool:
        """Whether the accuracy constraint is set."""
        return self.max_accuracy_drop is not None

    @property
    def result_objectives(self) -> Sequence[str]:
        """Names of the values stored in each archive entry's ``objectives``."""
        return self.objectives

    def reset(self) -> None:
        """Start a fresh archive (the evaluator's cache is kept)."""
        self.archive = []
        self.generation = 0
        self._reference_start = 0

    # ------------------------------------------------------------ evaluation
    def measure(self, X: np.ndarray) -> Dict[str, Any]:
        """Evaluate genomes and return the raw measurements (no archive entry).

        Returns:
            A dict of arrays of length ``n``: ``accuracy`` (failed candidates: 0), ``macs``,
            ``params``, ``macs_ratio``, ``params_ratio``, ``sparsity`` (failed: worst values),
            ``failed`` (bool), ``drop`` (points), ``confirmed`` (bool), ``subset_accuracy``
            and the list ``records`` of :class:`moprune.evaluation.EvalRecord`.
        """
        X = self.as_genomes(X)
        cost = self.space.cost(X)
        screen = self.screen and _takes(self.evaluator, "error_bounds")
        confirm = self._confirms()
        # bounds from the archive before this population, so the records do not depend on how many workers run it
        records = self.evaluator.evaluate(self.space, X, **self._limits(cost, screen, confirm))
        failed = np.array([r.error is not None for r in records], dtype=bool)
        subset_accuracy = np.array([r.accuracy for r in records], dtype=float)
        confirmed = np.array([getattr(r, "confirmed_accuracy", None) is not None for r in records], dtype=bool)
        accuracy = subset_accuracy.copy()
        if confirmed.any():  # on the subset's scale: the base's drop measured on all the images
            shift = self.base_accuracy - self.base_accuracy_confirmed
            pooled = np.array([r.confirmed_accuracy for r, c in zip(records, confirmed) if c], dtype=float)
            accuracy[confirmed] = np.clip(pooled + shift, 0.0, 1.0)
        failed |= ~np.isfinite(accuracy)
        m = {k: np.asarray(cost[k], dtype=float).copy()
             for k in ("macs", "params", "macs_ratio", "params_ratio", "sparsity")}
        m["accuracy"] = np.where(failed, 0.0, accuracy)
        m["macs_ratio"] = np.where(failed, np.maximum(m["macs_ratio"], 1.0), m["macs_ratio"])
        m["params_ratio"] = np.where(failed, np.maximum(m["params_ratio"], 1.0), m["params_ratio"])
        m["sparsity"] = np.where(failed, np.minimum(m["sparsity"], 0.0), m["sparsity"])
        m["failed"] = failed
        m["raw_accuracy"] = np.where(failed, np.nan, accuracy)
        m["subset_accuracy"] = np.where(failed, np.nan, subset_accuracy)
        m["confirmed"] = confirmed & ~failed
        m["drop"] = 100.0 * (self.base_accuracy - m["accuracy"])
        m["records"] = records
        m["X"] = X
        return m

    def _limits(self, cost, screen, confirm):
        """The evaluator's ``error_bounds``, ``confirm_limits`` and ``pooled_bounds`` (those that apply)."""
        if not (screen or confirm):
            return {}
        bounds = self.error_bounds(cost)
        options = {}
        if screen and bounds is not None and any(b is not None for b in bounds):
            options["error_bounds"] = bounds
        if confirm:  # an evaluator that takes confirm_limits takes pooled_bounds too
            options["confirm_limits"] = self.confirm_limits(bounds)
            if screen:
                options["pooled_bounds"] = self.error_bounds(cost, pooled=True)
        return options

    def error_bounds(self, cost: Dict[str, Any], *, pooled: bool = False) -> Optional[List[Optional[int]]]:
        """Per candidate, the fewest validation errors of an archived model at most as costly.

        "At most as costly" in every cost objective of the problem (``macs``, ``params``,
        ``sparsity``). Errors are counted on the subset (archive entries measured on all of it:
        not screened, or confirmed) or, with ``pooled``, on the subset and the confirmation
        images together (entries confirmed on all of them); failed entries do not count, nor
        those measured before a :meth:`rebase`. A candidate that makes more errors than its
        bound is dominated by that model (see :attr:`screen`). The first call orders the
        evaluator's validation images hardest first.

        Args:
            cost: ``space.cost(X)`` of the candidates.
            pooled: Count errors on both sets of images (the evaluator's ``pooled_bounds``).

        Returns:
            One bound (an int, or ``None`` where no archived model is at most as costly) per
            candidate; ``None`` when ``"error"`` is not an objective.
        """
        root = getattr(self, "parent", self)
        if "error" not in root.objectives:
            return None
        if hasattr(self.evaluator, "rank_images") and not self.evaluator.images_ranked:
            self.evaluator.rank_images(self.space.model)
        entries = [e for e in root.archive[getattr(root, "_reference_start", 0):]
                   if e.error is None and np.isfinite(e.accuracy)]
        if pooled:
            n_images = len(self.evaluator.val_subset) + len(self.evaluator.confirm_subset)
            reference = [e for e in entries if e.confirmed and not e.screened]
            errors = [int(round((1.0 - e.confirmed_accuracy) * n_images)) for e in reference]
        else:
            n_images = len(self.evaluator.val_subset)
            reference = [e for e in entries if not getattr(e, "screened", False) or e.confirmed]
            errors = [int(round((1.0 - e.accuracy_on_subset) * n_images)) for e in reference]
        columns = [_COST_COLUMNS[name] for name in root.objectives if name != "error"]
        return _fewest_cheaper(reference, np.array(errors, dtype=np.int64), columns, cost)

    def confirm_limits(self, bounds: Optional[List[Optional[int]]]) -> List[Optional[int]]:
        """Per candidate, the most subset errors with which it is measured on the confirmation images.

        Within :attr:`confirm_drop` points of the base, and no more than its bound (see
        :meth:`error_bounds`): a candidate that beats or ties every archived model at most as
        costly could enter the front.

        Args:
            bounds: :meth:`error_bounds` of the candidates.
        """
        n_images = len(self.evaluator.val_subset)
        region = int(np.floor(n_images * (1.0 - self.base_accuracy + self.confirm_drop / 100.0) + 1e-9))
        return [region if b is None else min(region, int(b)) for b in bounds]

    def objective_values(self, m: Dict[str, Any]) -> np.ndarray:
        """The ``n x n_obj`` matrix of :attr:`objectives` from :meth:`measure`'s output."""
        columns = {
            "error": 1.0 - m["accuracy"],
            "macs": m["macs_ratio"],
            "params": m["params_ratio"],
            "sparsity": 1.0 - m["sparsity"],
        }
        return np.column_stack([columns[o] for o in self.objectives]).astype(float)

    def constraint_values(self, m: Dict[str, Any]) -> Optional[np.ndarray]:
        """The ``n x 1`` constraint matrix (``None`` when unconstrained)."""
        if self.max_accuracy_drop is None:
            return None
        return (m["drop"] - self.max_accuracy_drop).reshape(-1, 1)

    def as_genomes(self, X: np.ndarray) -> np.ndarray:
        """Genomes as an ``n x n_var`` array of the space's type (bool, int64 or float); one genome gives ``n = 1``.

        Archive entries store genomes in this form, so ``as_genomes(x)[0].tobytes()`` identifies
        a genome among them.
        """
        X = np.asarray(X)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if self.space.vtype is bool:
            return X.astype(bool)
        if self.space.vtype is int and np.issubdtype(X.dtype, np.number) and np.isfinite(X).all() \
                and (np.rint(X) == X).all():
            return X.astype(np.int64)  # non-integer values stay float: the space names them
        return X.astype(float)

    def latest_evaluations(self, X: np.ndarray) -> List[Optional[Evaluation]]:
        """The latest archive entry of each genome of ``X`` (``None`` for one not evaluated in this run).

        Args:
            X: One genome or an ``n x n_var`` array of them.

        Returns:
            A list of ``n`` :class:`moprune.archive.Evaluation` or ``None``.
        """
        latest = {np.asarray(e.genome).tobytes(): e for e in self.archive}
        return [latest.get(x.tobytes()) for x in self.as_genomes(X)]

    def rebase(self, model: nn.Module, plan: Union[Plan, np.ndarray], *, drop_cache: bool = True) -> Space:
        """Search a space rebased on the weights of ``model`` (a retrained ``plan``) from now on.

        ``problem.space`` becomes ``space.rebase(model, plan)`` (see
        :meth:`moprune.space.ChannelSpace.rebase`): the kept units take ``model``'s weights, the
        others keep theirs, and the genome layout, ranking and costs stay. The evaluator's cache
        entries were measured on the old weights, so they are dropped. ``base_accuracy`` stays
        the one measured on the original model.

        Args:
            model: The retrained model materialized from ``plan``.
            plan: Its plan (or genome).
            drop_cache: Drop the evaluator's cached measurements (``False`` only when they were
                made on these weights already, e.g. when a checkpoint restores them).

        Returns:
            The new space.
        """
        self.space = self.space.rebase(model, plan)
        if drop_cache:
            self.evaluator.cache.clear()
        self._reference_start = len(self.archive)  # screening compares with the new weights' models only
        return self.space

    def _record(self, m, F, G):
        """Append one archive entry per candidate."""
        for i, rec in enumerate(m["records"]):
            feasible = not m["failed"][i] and (G is None or G[i, 0] <= 0.0)
            self.archive.append(Evaluation(
                genome=np.array(m["X"][i], copy=True),
                plan_key=rec.plan_key,
                summary=dict(rec.summary),
                objectives=tuple(float(v) for v in F[i]),
                accuracy=float(m["raw_accuracy"][i]),
                macs=float(m["macs"][i]),
                params=float(m["params"][i]),
                macs_ratio=float(m["macs_ratio"][i]),
                params_ratio=float(m["params_ratio"][i]),
                sparsity=float(m["sparsity"][i]),
                feasible=bool(feasible),
                generation=int(self.generation),
                cached=bool(rec.cached),
                seconds=float(rec.seconds),
                error=rec.error,
                screened=bool(getattr(rec, "screened", False)),
                subset_accuracy=float(m["subset_accuracy"][i]),
                confirmed_accuracy=float(rec.confirmed_accuracy) if m["confirmed"][i] else float("nan"),
                confirm_images=int(getattr(rec, "confirm_images", None) or 0) if m["confirmed"][i] else 0,
            ))

    def _evaluate(self, X, out, *args, **kwargs):
        m = self.measure(X)
        F = self.objective_values(m)
        G = self.constraint_values(m)
        out["F"] = F
        if G is not None:
            out["G"] = G
        self._record(m, self._archived_objectives(m, F), G)

    def _archived_objectives(self, m, F):
        return F

    # --------------------------------------------------------------- views
    def scalarized(self, scoring: Union[str, Scoring], **scoring_options: Any) -> "ScalarizedProblem":
        """A single-objective view minimising ``-score`` (used by ``"ga"`` and the seed loops).

        The view shares this problem's space, evaluator, archive, generation, base accuracy and
        constraint. Its archive entries store this problem's objectives followed by ``-score``
        (names in :attr:`result_objectives`).

        Args:
            scoring: A score name (``"weighted"``, ``"threshold"``, ``"genecai"``) or a
                :class:`moprune.scoring.Scoring`.
            **scoring_options: Arguments of the score's constructor (with a name).

        Returns:
            A :class:`ScalarizedProblem`.
        """
        return ScalarizedProblem(self, make_scoring(scoring, **scoring_options))

    def __repr__(self):
        return (f"PruningProblem(n_var={self.n_var}, objectives={self.objectives}, "
                f"max_accuracy_drop={self.max_accuracy_drop})")


class ProblemView(PruningProblem):
    """A problem that an algorithm searches in place of a :class:`PruningProblem` it views.

    Space, evaluator, archive, generation, base accuracy and constraint live on the parent, so
    every candidate still lands in the parent's archive; subclasses change only what the
    algorithm sees (:class:`ScalarizedProblem`, :class:`FocusedProblem`).

    Attributes:
        parent: The multi-objective problem it views.
    """

    @staticmethod
    def root(problem):
        """The :class:`PruningProblem` behind ``problem`` (itself when it is not a view)."""
        return problem.parent if isinstance(problem, ProblemView) else problem

    def _view(self, parent, *, n_obj, n_ieq_constr):
        self.parent = parent
        Problem.__init__(self, n_var=parent.n_var, n_obj=n_obj, n_ieq_constr=n_ieq_constr,
                         xl=parent.xl, xu=parent.xu, vtype=parent.vtype, elementwise=False)

    space = property(lambda self: self.parent.space)
    evaluator = property(lambda self: self.parent.evaluator)
    max_accuracy_drop = property(lambda self: self.parent.max_accuracy_drop)
    base_accuracy = property(lambda self: self.parent.base_accuracy)

    @property
    def archive(self):
        return self.parent.archive

    @archive.setter
    def archive(self, value):
        self.parent.archive = value

    @property
    def generation(self):
        return self.parent.generation

    @generation.setter
    def generation(self, value):
        self.parent.generation = value

    def rebase(self, model, plan, *, drop_cache=True):
        """Rebase the parent problem's space (see :meth:`PruningProblem.rebase`); this view follows it."""
        return self.parent.rebase(model, plan, drop_cache=drop_cache)


class ScalarizedProblem(ProblemView):
    """Single-objective view of a :class:`PruningProblem`: ``F = -score`` (see ``scalarized``).

    Attributes:
        parent: The multi-objective problem it views.
        scoring: The :class:`moprune.scoring.Scoring`.
    """

    def __init__(self, parent, scoring):
        parent = self.root(parent)
        self.scoring = scoring
        self._view(parent, n_obj=1, n_ieq_constr=parent.n_ieq_constr)

    @property
    def objectives(self):
        return (SCORE_OBJECTIVE,)

    @property
    def result_objectives(self):
        return tuple(self.parent.objectives) + (SCORE_OBJECTIVE,)

    def score(self, m):
        """Scores (higher is better) of :meth:`measure`'s output."""
        return self.scoring(m["accuracy"], m["macs_ratio"], m["params_ratio"], m["sparsity"],
                            self.base_accuracy)

    def objective_values(self, m):
        return -self.score(m).reshape(-1, 1)

    def _archived_objectives(self, m, F):
        return np.column_stack([self.parent.objective_values(m), F])

    def __repr__(self):
        return f"ScalarizedProblem({self.parent!r}, scoring={self.scoring!r})"


class FocusedProblem(ProblemView):
    """A view of a :class:`PruningProblem` that steers a search to the models users pick from.

    Two changes, seen only by the algorithm: cost objectives (``macs``, ``params``,
    ``sparsity``) are minimised on a log scale, so a front is spread over orders of magnitude
    of model size rather than crowding the large models that barely differ in error; and one
    constraint ``drop - band <= 0`` (accuracy points below the base), so candidates that lost
    more than ``band`` points rank behind every candidate within it (pymoo's constraint
    handling keeps the least bad of them while none is within). The archive, result objectives
    and feasibility stay exactly those of the parent problem.

    Args:
        parent: The :class:`PruningProblem` it views.
        band: Accuracy drop in points that the search focuses on (``None``: no band).
        screen: Stop measuring candidates that are certainly dominated (see
            :attr:`PruningProblem.screen`).
        confirm: Measure candidates that could enter the front on the confirmation images too
            (see :attr:`PruningProblem.confirm`).
        confirm_drop: Accuracy points below the base within which candidates are confirmed.

    Attributes:
        parent, band, screen, confirm, confirm_drop: As given.
    """

    def __init__(self, parent, band, screen=False, confirm=False, confirm_drop=5.0):
        parent = self.root(parent)
        self.screen = check_bool("screen", screen)
        self.confirm = check_bool("confirm", confirm)
        self.confirm_drop = check_real("confirm_drop", confirm_drop, low=0.0, high=100.0, unit="accuracy points")
        self.band = check_real("band", band, low=0.0, high=100.0, allow_none=True, unit="accuracy points")
        if self.band is not None and "error" not in parent.objectives:
            raise invalid_value("band", "None when 'error' is not an objective", band)
        self._view(parent, n_obj=parent.n_obj, n_ieq_constr=0 if self.band is None else 1)

    objectives = property(lambda self: self.parent.objectives)
    result_objectives = property(lambda self: self.parent.objectives)

    def search_values(self, m):
        """``(F, G)`` the algorithm sees for :meth:`measure`'s output (``G`` is ``None`` without a band)."""
        F = self.parent.objective_values(m).copy()
        for j, name in enumerate(self.parent.objectives):
            if name != "error":
                F[:, j] = np.log(np.maximum(F[:, j], 1e-9))
        G = None
        if self.band is not None:
            drop = self.band if self.max_accuracy_drop is None else min(self.band, self.max_accuracy_drop)
            G = (m["drop"] - drop).reshape(-1, 1)
        return F, G

    def _evaluate(self, X, out, *args, **kwargs):
        m = self.measure(X)
        F, G = self.search_values(m)
        out["F"] = F
        if G is not None:
            out["G"] = G
        # kept on each individual (pymoo stores every output) for the saturation and ceiling points: measured
        # on the subset, as every candidate is (a confirmed one's accuracy on more images is the front's)
        out["drop"] = 100.0 * (self.base_accuracy - np.where(m["failed"], 0.0, m["subset_accuracy"]))
        self.parent._record(m, self.parent.objective_values(m), self.parent.constraint_values(m))

    def __repr__(self):
        return f"FocusedProblem({self.parent!r}, band={self.band})"


def bind_problem(algorithm, problem):
    """Make :func:`moprune.search` run ``algorithm`` on ``problem`` instead of the one it was given.

    Factories of single-objective algorithms call it with ``problem.scalarized(scoring)``, so the
    search minimises ``-score`` while the archive and result stay those of the original problem.

    Returns:
        ``algorithm``, for chaining.
    """
    algorithm.moprune_problem = problem
    return algorithm
