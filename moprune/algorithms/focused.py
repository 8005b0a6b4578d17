"""``"focused"``: the default search. NSGA-II steered by what pruning knows.

NSGA-II alone spreads its population evenly over the whole front, most of it on models nobody
picks, and treats a genome as anonymous numbers. This variant keeps pymoo's NSGA-II (ranking,
crowding, tournament selection) and changes what it is fed:

- the first population is a uniform keep-ratio sweep spaced evenly in log-MACs, twins of some of
  its levels tilted towards the groups with many parameters per MAC, and per-group
  perturbations of the sweep (:class:`moprune.operators.pruning.SweepSampling`);
- offspring come from group-wise crossover and a mutation that changes how many units a group
  keeps, pruning the least important first, with single-unit swaps near the importance boundary
  for binary genomes (:class:`~moprune.operators.pruning.KeepRatioMutation`);
- the search sees cost on a log scale and an accuracy band: candidates more than ``band``
  points below the base rank behind all others (:class:`moprune.problem.FocusedProblem`);
- a genome that decodes to a plan already evaluated is never asked for again
  (:class:`~moprune.operators.pruning.PlanDuplicateElimination`);
- every candidate's channel groups keep at least half the geometric mean of its keep ratios
  (``max_imbalance``, :func:`~moprune.operators.pruning.balance_groups`): a bottleneck group
  scores well before retraining but caps what retraining recovers;
- cost is compressed above the smallest model that kept the base accuracy (within
  ``saturation_drop`` points: the saturation point), and for the first ``ceiling_until`` of the
  budget offspring are shrunk to at most ``ceiling_factor`` times the MACs of the smallest model
  no worse than the base (``ceiling_drop``: the lossless point;
  :class:`~moprune.operators.pruning.CostCeilingRepair`). Larger models barely differ in error
  but cost the most to evaluate (evaluation time grows with MACs), so most of the budget goes to
  the models users pick from; the rest also looks above the ceiling. The compression is a
  monotone transform: it never changes which candidate dominates which, only how the front is
  spaced;
- a small share of each generation's offspring (``tail_share``) is bred from the front of the
  candidates outside the band (the low-accuracy tail, small and cheap to evaluate), so the
  whole front keeps improving while the population stays in the band.
- a candidate stops being measured once it has made more validation errors than an evaluated
  model at most as costly (``screen``; the validation images are ordered hardest first, so
  most dominated candidates stop after a batch or two): it is dominated whatever the rest of
  the images say, so only time changes, not the front;
- a candidate that could enter the front (within ``confirm_drop`` points of the base, beaten by
  no evaluated model at most as costly on the subset) is measured again on the evaluator's
  confirmation images (``confirm``; ``Evaluator(confirm_samples="auto")``, three times as many
  from 1,000 evaluations: :meth:`moprune.Evaluator.fit_confirmation`), and its place on the
  front is decided on both: among many near-equal candidates near the base, the luckiest on a
  small subset would otherwise fill the front (on ``mnist_cnn`` the front measured on held-out
  images is then ahead of Optuna's TPE in 12 of 15 seeds instead of level, for 1.47x the time);
- optionally (``head_share``, off by default), after ``head_after`` evaluations another small
  share is bred from the front of the candidates no worse than the base (the head), free of the
  ceiling. On ``mnist_cnn`` what it finds are models that beat the base on the validation subset
  by one or two images and lose to it on held-out images (``benchmarks/heldout_check.py``), so
  it is not part of the default.

The archive and the result are those of the problem given: same objectives, same feasibility.
"""

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.population import Population
from pymoo.termination.max_eval import MaximumFunctionCallTermination
from pymoo.termination.max_gen import MaximumGenerationTermination
from pymoo.util.nds.non_dominated_sorting import find_non_dominated

from moprune.algorithms import ALGORITHMS
from moprune.exceptions import MopruneError, invalid_value
from moprune.operators.binary import run_progress
from moprune.operators.pruning import (
    CostCeilingRepair,
    GroupUniformCrossover,
    KeepRatioMutation,
    PlanDuplicateElimination,
    SweepSampling,
    uniform_costs,
)
from moprune.problem import FocusedProblem, bind_problem
from moprune.space import ChannelSpace
from moprune.validation import check_choice, check_int, check_pop_size, check_probability, check_real

DEFAULT_BAND = 5.0
"""Accuracy points below the base the default search focuses on."""

DEFAULT_MAX_IMBALANCE = 2.0
"""Channel groups keep at least the geometric mean of a candidate's keep ratios over this."""

SURVIVALS = ("nsga2", "smsemoa", "nsga3", "agemoea2")
"""Whose survival (and matching parent selection) ``survival=`` gives the default search."""


def _cv_then_random(pop, P, random_state=None, **kwargs):
    """NSGA-III's tournament (``comp_by_cv_then_random``), seeded: pymoo 0.6.2 breaks ties between
    equally infeasible candidates with an unseeded generator, so the same seed gave other runs."""
    from pymoo.operators.selection.tournament import compare

    S = np.empty(len(P), dtype=int)
    for i, (a, b) in enumerate(P[:, :2]):
        if pop[a].CV[0] > 0.0 or pop[b].CV[0] > 0.0:
            S[i] = compare(a, pop[a].CV[0], b, pop[b].CV[0], method="smaller_is_better",
                           return_random_if_equal=True, random_state=random_state)
        else:
            S[i] = random_state.choice([a, b])
    return S[:, None]


def _survival(name, pop_size, n_obj):
    """``survival`` and ``selection`` arguments of pymoo's algorithm ``name`` (``{}``: NSGA-II's own)."""
    from pymoo.operators.selection.tournament import TournamentSelection

    if name == "nsga2":
        return {}
    if name == "smsemoa":  # least hypervolume contribution; its tournament reads no crowding distance
        from pymoo.algorithms.moo.sms import LeastHypervolumeContributionSurvival, cv_and_dom_tournament

        return dict(survival=LeastHypervolumeContributionSurvival(),
                    selection=TournamentSelection(func_comp=cv_and_dom_tournament))
    if name == "nsga3":
        from pymoo.algorithms.moo.nsga3 import ReferenceDirectionSurvival
        from pymoo.util.ref_dirs import get_reference_directions

        ref_dirs = get_reference_directions("energy", n_obj, pop_size, seed=1) if n_obj > 2 else \
            get_reference_directions("das-dennis", n_obj, n_partitions=pop_size - 1)
        return dict(survival=ReferenceDirectionSurvival(ref_dirs),
                    selection=TournamentSelection(func_comp=_cv_then_random))
    try:  # agemoea2: sets rank and crowding, as NSGA-II's tournament reads
        from pymoo.algorithms.moo.age2 import AGEMOEA2Survival
    except Exception as error:  # pymoo raises a bare Exception without numba
        raise MopruneError(f"survival='agemoea2' needs numba (pymoo's AGE-MOEA2): pip install numba ({error})") from None
    return dict(survival=AGEMOEA2Survival())


class FocusedNSGA2(NSGA2):
    """NSGA-II that never asks twice for a plan it evaluated, bands accuracy and bounds cost.

    When the plans left near the population run out (small spaces, late in a run), the missing
    offspring are drawn without that check, as plain NSGA-II would (they are then served by the
    evaluator's cache). The accuracy band (the view's constraint) applies once ``band_after`` of
    the budget is spent; before, every candidate counts as within it. Each generation, the
    saturation point is lowered by the new candidates, the population's (log) cost objectives
    are compressed above it (the raw values stay in ``ind.data["raw_F"]``) and the repair's
    cost ceiling is updated.
    """

    band_after = 0.0
    """Fraction of the budget spent before the accuracy band applies."""

    saturation_drop = 0.5
    """Accuracy points below the base within which a model counts as keeping the base accuracy."""

    saturation_slope = 0.2
    """Slope of the (log) cost objectives above the saturation point (1: no compression)."""

    ceiling_factor = 1.0
    """Offspring cost at most this multiple of the ceiling point (``None``: no ceiling)."""

    ceiling_drop = 0.0
    """Accuracy points below the base of the ceiling point, the smallest model within them (``None``: the saturation point)."""

    ceiling_until = 0.7
    """Fraction of the budget after which the ceiling is lifted."""

    tail_share = 0.1
    """Share of each generation's offspring bred from the front of the candidates outside the band."""

    head_share = 0.0
    """Share of each generation's offspring bred, not bound by the ceiling, from the front of the candidates within ``ceiling_drop``."""

    head_after = 500
    """Evaluations spent before the head is bred."""

    def _setup(self, problem, **kwargs):
        super()._setup(problem, **kwargs)
        self._fit_confirmation()
        self._saturation = None  # per objective: smallest log cost that kept the base accuracy
        self._ceiling_point = None  # per objective: smallest log cost within ceiling_drop of the base
        self._tail = Population.empty()  # non-dominated candidates outside the band (raw objectives)
        self._head = Population.empty()  # non-dominated candidates within ceiling_drop (raw objectives)

    def budget(self):
        """Evaluations this run will ask for, read from its termination (``None``: unknown)."""
        termination = self.termination
        if isinstance(termination, MaximumFunctionCallTermination) and np.isfinite(termination.n_max_evals):
            return int(termination.n_max_evals)
        if isinstance(termination, MaximumGenerationTermination) and np.isfinite(termination.n_max_gen):
            return int(self.pop_size + (termination.n_max_gen - 1) * self.n_offsprings)
        return None

    def _fit_confirmation(self):
        """Size the evaluator's confirmation images to the budget (idempotent: a resumed run calls it again)."""
        evaluator = getattr(self.problem, "evaluator", None)
        if getattr(self.problem, "confirm", False) and hasattr(evaluator, "fit_confirmation"):
            evaluator.fit_confirmation(self.budget())

    def _infill(self):
        self._fit_confirmation()
        eliminator = self.eliminate_duplicates
        n_tail = min(int(round(self.tail_share * self.n_offsprings)), len(self._tail))
        off = self._breed(self._tail, n_tail) if n_tail else Population.empty()
        n_head = min(int(round(self.head_share * self.n_offsprings)), len(self._head))
        n_head = n_head if self.evaluator.n_eval >= self.head_after else 0
        if n_head:
            head = self._breed(self._head, n_head, uncapped=True)
            off = Population.merge(off, head) if len(off) else head
        main = self.mating.do(self.problem, self.pop, self.n_offsprings - len(off), algorithm=self,
                              random_state=self.random_state)
        off = Population.merge(off, main) if len(off) else main
        if len(off) < self.n_offsprings and isinstance(eliminator, PlanDuplicateElimination):
            eliminator.check_seen = False
            try:
                more = self.mating.do(self.problem, self.pop, self.n_offsprings - len(off), algorithm=self,
                                      random_state=self.random_state)
            finally:
                eliminator.check_seen = True
            off = Population.merge(off, more) if len(off) else more
        if len(off) == 0:
            self.termination.force_termination = True
            return None
        return off

    def _initialize_advance(self, infills=None, **kwargs):
        self._remember(infills)
        self._apply_view(infills, infills)
        super()._initialize_advance(infills=infills, **kwargs)

    def _advance(self, infills=None, **kwargs):
        self._remember(infills)
        self._apply_view(self.pop if infills is None else Population.merge(self.pop, infills), infills)
        return super()._advance(infills=infills, **kwargs)

    def _breed(self, pool, n, uncapped=False):
        """``n`` offspring of parents drawn at random from ``pool`` (may be fewer: duplicates).

        ``uncapped``: the repair's cost ceiling does not apply to them.
        """
        n_matings = -(-n // self.mating.crossover.n_offsprings)
        index = self.random_state.integers(len(pool), size=(n_matings, self.mating.crossover.n_parents))
        repair = self.repair if uncapped and isinstance(self.repair, CostCeilingRepair) else None
        ceiling = repair.ceiling if repair is not None else None
        if repair is not None:
            repair.ceiling = None
        try:
            off = self.mating.do(self.problem, pool, n, parents=pool[index], algorithm=self,
                                 random_state=self.random_state)
        finally:
            if repair is not None:
                repair.ceiling = ceiling
        return off[:n]

    def _update_tail(self, infills):
        """Keep the non-dominated set (raw objectives) of the candidates that fell outside the band."""
        if infills is None or self.problem.n_ieq_constr == 0 or self.tail_share == 0:
            return
        out = [ind for ind in infills if np.max(ind.data.get("band_G", ind.G)) > 0]
        if not out:
            return
        pool = Population.merge(self._tail, Population.create(*out)) if len(self._tail) else Population.create(*out)
        F = np.array([ind.data.get("raw_F", ind.F) for ind in pool], dtype=float)
        self._tail = pool[find_non_dominated(F)]

    def _ceiling_drop(self):
        return self.saturation_drop if self.ceiling_drop is None else self.ceiling_drop

    def _update_head(self, infills):
        """Keep the non-dominated set (raw objectives) of the candidates within ``ceiling_drop`` of the base."""
        if infills is None or self.head_share == 0:
            return
        new = [ind for ind in infills if ind.get("drop") is not None and np.isfinite(ind.get("drop"))
               and ind.get("drop") <= self._ceiling_drop()]
        if not new:
            return
        pool = Population.merge(self._head, Population.create(*new)) if len(self._head) else Population.create(*new)
        F = np.array([ind.data.get("raw_F", ind.F) for ind in pool], dtype=float)
        self._head = pool[find_non_dominated(F)]

    def _apply_view(self, pop, infills):
        self._update_saturation(infills)
        self._apply_saturation(pop)
        self._apply_band(pop)
        self._update_tail(infills)
        self._update_head(infills)

    def _cost_columns(self):
        return [j for j, name in enumerate(self.problem.objectives) if name != "error"]

    def _update_saturation(self, infills):
        """Lower the saturation point with the new candidates that kept the base accuracy."""
        if infills is None or "error" not in self.problem.objectives:
            return
        cols = self._cost_columns()
        ceiling_drop = self._ceiling_drop()
        for ind in infills:
            drop = ind.get("drop")
            if drop is None or not np.isfinite(drop):
                continue
            costs = np.asarray(ind.data.get("raw_F", ind.F), dtype=float)[cols]
            if drop <= self.saturation_drop:
                self._saturation = _lowest(self._saturation, costs)
            if drop <= ceiling_drop:
                self._ceiling_point = _lowest(self._ceiling_point, costs)
        repair = self.repair
        if isinstance(repair, CostCeilingRepair) and run_progress(self) >= self.ceiling_until:
            repair.ceiling = None
        elif self._ceiling_point is not None and self.ceiling_factor is not None and isinstance(repair, CostCeilingRepair):
            name = "macs" if repair.key == "macs_ratio" else "params"
            if name in self.problem.objectives:
                j = self._cost_columns().index(self.problem.objectives.index(name))
                repair.ceiling = min(1.0, self.ceiling_factor * float(np.exp(self._ceiling_point[j])))

    def _apply_saturation(self, pop):
        """The search's cost objectives: log cost, with slope ``saturation_slope`` above saturation."""
        if pop is None:
            return
        cols = self._cost_columns()
        for ind in pop:
            raw = ind.data.setdefault("raw_F", np.array(ind.F, dtype=float, copy=True))
            F = raw.copy()
            if self._saturation is not None:
                above = np.maximum(F[cols] - self._saturation, 0.0)
                F[cols] = F[cols] - (1.0 - self.saturation_slope) * above
            ind.F = F

    def _apply_band(self, pop):
        """Switch the band constraint on once ``band_after`` of the budget is spent."""
        if pop is None or self.problem.n_ieq_constr == 0:
            return
        active = run_progress(self) >= self.band_after
        for ind in pop:
            raw = ind.data.setdefault("band_G", np.array(ind.G, dtype=float, copy=True))
            ind.G = raw if active else np.minimum(raw, 0.0)
            ind.CV = None  # pymoo recomputes the violation from G

    def _remember(self, infills):
        if infills is not None and isinstance(self.eliminate_duplicates, PlanDuplicateElimination):
            self.eliminate_duplicates.remember(infills)


def _lowest(current, costs):
    """Element-wise minimum of a running point (``None``: none yet) and new costs."""
    return costs if current is None else np.minimum(current, costs)


def _largest_uniform_macs(space, limits):
    """MACs ratio of the largest uniform keep-ratio model within ``limits`` (cost key -> bound)."""
    grid, cost = uniform_costs(space)
    fits = np.ones(len(grid), dtype=bool)
    for key, limit in limits.items():
        fits &= np.asarray(cost[key], dtype=float) <= limit
    macs = np.asarray(cost["macs_ratio"], dtype=float)
    if not fits.any():
        raise invalid_value(", ".join(f"max_{k.split('_')[0]}" for k in limits),
                            f"a budget some model of this space fits (the smallest has {macs.min():.4f} of the "
                            f"MACs, {np.min(cost['params_ratio']):.4f} of the parameters)",
                            ", ".join(f"{v}" for v in limits.values()))
    return float(macs[fits].max())


@ALGORITHMS.register("focused")
def make_focused(problem, *, pop_size, band="auto", max_macs=None, max_params=None, band_after=0.0, saturation_drop=0.5,
                 saturation_slope=0.2, ceiling_factor=1.0, ceiling_drop=0.0, ceiling_until=0.7, tail_share=0.1, head_share=0.0, head_after=500,
                 sweep_fraction=0.3, sweep_min_macs=0.002, sweep_max_macs=0.9, tilt_fraction=0.2, tilt=0.15,
                 max_imbalance="auto", sigma=0.3, final_sigma=0.1,
                 swap_prob=0.3, crossover_prob=0.9, n_offsprings=None, screen=True, confirm=True, confirm_drop=5.0,
                 survival="nsga2"):
    """The default search: NSGA-II seeded by a uniform sweep, with pruning-aware operators.

    Args:
        problem: A :class:`moprune.PruningProblem`.
        pop_size: Population size.
        band: Accuracy drop in points the search focuses on (``None``: the whole front; ``"auto"``:
            :data:`DEFAULT_BAND` without a budget, the whole front under one). With the problem's
            own ``max_accuracy_drop``, the smaller of the two.
        max_macs, max_params: A budget (fractions of the base model's MACs / parameters, or
            ``None``): every candidate evaluated fits it (the uniform sweep spans the models
            within it and offspring are shrunk into it), so the whole budget of evaluations goes
            to the models a user can deploy.
        band_after: Fraction of the budget in [0, 1) spent on the whole front before the band
            applies (cheap small models explored early widen the front's low-accuracy end).
        saturation_drop: Accuracy points below the base within which a model counts as keeping
            the base accuracy; the smallest such model evaluated is the saturation point.
        saturation_slope: Slope in (0, 1] of the log cost objectives above the saturation point
            (1: none). Smaller values spend fewer offspring on large, slow-to-evaluate models
            whose accuracy hardly differs.
        ceiling_factor: Offspring are shrunk to at most this multiple of the ceiling point's
            cost (``None``: no ceiling; the first population is not bounded).
        ceiling_drop: Accuracy points below the base of the ceiling point, the smallest model
            evaluated within them (0: the smallest no worse than the base on the validation
            subset, the lossless point; ``None``: the saturation point).
        ceiling_until: Fraction of the budget in (0, 1] after which the ceiling is lifted: small,
            fast-to-evaluate models first, then the larger ones (1: never lifted).
        tail_share: Share in [0, 0.5] of each generation's offspring bred from the front of the
            candidates more than ``band`` points below the base (0: none). They are small models,
            cheap to evaluate, and keep the low-accuracy end of the whole front improving.
        head_share: Share in [0, 0.5] of each generation's offspring bred from the front of the
            candidates within ``ceiling_drop`` of the base (by default: no worse than it), and not
            bound by the ceiling (0: none, the default): they look above the ceiling point for
            smaller models that keep or beat the base accuracy. Models that beat the base on a
            small validation subset mostly do so by chance: check them on held-out images
            (``benchmarks/heldout_check.py``).
        head_after: Evaluations spent before the head is bred: a run of up to this many
            evaluations spends them all on the band; a longer one also looks for small models
            that score at least as well as the base.
        sweep_fraction: Share of the first population that is the uniform keep-ratio sweep.
        sweep_min_macs: MACs ratio of the smallest uniform model of the sweep.
        sweep_max_macs: MACs ratio of the largest uniform model of the sweep (and of the levels the
            rest of the first population is perturbed from).
        tilt_fraction: Share of the first population that is parameter-tilted twins of sweep
            levels (same MACs, more of the budget in groups with many parameters per MAC).
        tilt: How far the twins lean (:func:`moprune.operators.pruning.tilted_allocation`).
        max_imbalance: Every candidate's groups keep at least the geometric mean of its keep
            ratios divided by this (:func:`moprune.operators.pruning.balance_groups`; ``None``: no
            bound; ``"auto"``: :data:`DEFAULT_MAX_IMBALANCE` on a :class:`moprune.ChannelSpace`,
            where a bottleneck group caps what retraining recovers, ``None`` elsewhere: weight
            masks prune layers very unevenly on purpose).
        sigma, final_sigma: Log-normal step of the keep-ratio mutation, start and end of the run.
        swap_prob: Probability of a single-unit swap near the importance boundary (binary genomes).
        crossover_prob: Probability that a mating is crossed (group-wise uniform crossover).
        n_offsprings: Offspring per generation (default ``pop_size``).
        screen: Stop measuring a candidate once it has made more validation errors than an
            evaluated model at most as costly (it is dominated whatever the other images say;
            :attr:`moprune.PruningProblem.screen`): the same front for less evaluation time.
        confirm: Measure the candidates that could enter the front (within ``confirm_drop``
            points of the base, beaten by no evaluated model at most as costly) on the
            evaluator's confirmation images too, when it has some (``Evaluator(confirm_samples=...)``;
            :attr:`moprune.PruningProblem.confirm`): a model lucky on the validation subset does
            not hold its place on the front by luck.
        confirm_drop: Accuracy points below the base within which candidates are confirmed.
        survival: Which of pymoo's survivals picks each next population from the candidates the
            search sees (log costs, the band): ``"nsga2"`` (rank and crowding distance, the
            default), ``"smsemoa"`` (least hypervolume contribution), ``"nsga3"`` (reference
            directions) or ``"agemoea2"`` (adaptive geometry; needs numba), each with the parent
            tournament of its algorithm. Everything else stays the default search's.

    Returns:
        A configured :class:`FocusedNSGA2` bound to a :class:`moprune.problem.FocusedProblem` view.
    """
    pop_size = check_pop_size(pop_size, minimum=2)
    max_macs = check_real("max_macs", max_macs, low=0.0, high=1.0, low_open=True, allow_none=True)
    max_params = check_real("max_params", max_params, low=0.0, high=1.0, low_open=True, allow_none=True)
    budgeted = max_macs is not None or max_params is not None
    if isinstance(band, str):
        if band != "auto":
            raise invalid_value("band", "'auto', None or accuracy points in [0, 100]", band)
        band = None if budgeted else DEFAULT_BAND
    if "error" not in problem.objectives and band is not None:
        band = None  # nothing to focus on without an accuracy objective
    view = FocusedProblem(problem, band, screen=screen, confirm=confirm, confirm_drop=confirm_drop)
    space = problem.space
    if getattr(space, "vtype", None) is int:
        raise invalid_value("problem", "a problem over a binary or ratio-encoded space for 'focused' (integer "
                            "genomes: use 'nsga2', 'ga' or 'genecai')", type(space).__name__)
    for method in ("genomes_from_ratios", "group_ratios", "keep_order"):
        if not hasattr(space, method):
            raise invalid_value("problem", f"a problem whose space has {method}()", type(space).__name__)
    if isinstance(max_imbalance, str):
        if max_imbalance != "auto":
            raise invalid_value("max_imbalance", "'auto', None or a factor >= 1", max_imbalance)
        max_imbalance = DEFAULT_MAX_IMBALANCE if isinstance(space, ChannelSpace) else None
    eliminator = PlanDuplicateElimination(space)
    limits = {key: limit for key, limit in (("macs_ratio", max_macs), ("params_ratio", max_params)) if limit is not None}
    if budgeted:  # the sweep spans the uniform models within the budget
        sweep_max_macs = min(sweep_max_macs, _largest_uniform_macs(space, limits))
        sweep_min_macs = min(sweep_min_macs, sweep_max_macs / 10)
    survival = check_choice("survival", survival, SURVIVALS)
    algorithm = FocusedNSGA2(
        **_survival(survival, pop_size, problem.n_obj),
        pop_size=pop_size,
        n_offsprings=check_int("n_offsprings", n_offsprings, low=1, allow_none=True) or pop_size,
        sampling=SweepSampling(sweep_fraction=sweep_fraction, min_macs=sweep_min_macs, max_macs=sweep_max_macs,
                               tilt=tilt, tilt_fraction=tilt_fraction),
        crossover=GroupUniformCrossover(prob=check_probability("crossover_prob", crossover_prob)),
        mutation=KeepRatioMutation(sigma=sigma, final_sigma=final_sigma, swap_prob=swap_prob),
        repair=CostCeilingRepair(space, key="params_ratio" if "macs" not in problem.objectives else "macs_ratio",
                                 limits=limits, max_imbalance=max_imbalance),
        eliminate_duplicates=eliminator,
    )
    algorithm.band_after = check_probability("band_after", band_after)
    algorithm.saturation_drop = check_real("saturation_drop", saturation_drop, low=0.0, high=100.0,
                                           unit="accuracy points")
    algorithm.saturation_slope = check_real("saturation_slope", saturation_slope, low=0.0, high=1.0, low_open=True)
    algorithm.ceiling_factor = check_real("ceiling_factor", ceiling_factor, low=1.0, allow_none=True)
    algorithm.ceiling_drop = check_real("ceiling_drop", ceiling_drop, low=0.0, high=100.0, unit="accuracy points",
                                        allow_none=True)
    algorithm.tail_share = check_real("tail_share", tail_share, low=0.0, high=0.5)
    algorithm.head_share = check_real("head_share", head_share, low=0.0, high=0.5)
    algorithm.head_after = check_int("head_after", head_after, low=0)
    algorithm.ceiling_until = check_real("ceiling_until", ceiling_until, low=0.0, high=1.0, low_open=True)
    return bind_problem(algorithm, view)
