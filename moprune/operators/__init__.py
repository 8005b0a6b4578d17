"""Genetic operators (pymoo subclasses) and the helper that picks them for a space.

Names such as ``"uniform"`` are resolved here, at the edge; algorithms get operator objects.
"""

from pymoo.operators.crossover.pntx import SinglePointCrossover
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import FloatRandomSampling, IntegerRandomSampling

from moprune.exceptions import invalid_value
from moprune.operators.binary import (
    AdaptiveBitflipMutation,
    BinaryRandomSampling,
    BinarySinglePointCrossover,
    BinaryUniformCrossover,
    NearOriginalSampling,
)
from moprune.operators.integer import StepMutation
from moprune.operators.perturbation import PerturbationMutation

__all__ = [
    "AdaptiveBitflipMutation",
    "BinaryRandomSampling",
    "BinarySinglePointCrossover",
    "BinaryUniformCrossover",
    "NearOriginalSampling",
    "PerturbationMutation",
    "StepMutation",
    "default_operators",
    "SAMPLINGS",
    "CROSSOVERS",
]

SAMPLINGS = ("random", "near_original")
"""Sampling names understood by :func:`default_operators`."""

CROSSOVERS = ("uniform", "single_point", "sbx")
"""Crossover names understood by :func:`default_operators` (``"sbx"``: real-valued spaces only)."""


def default_operators(space, *, sampling="random", keep_prob=None, crossover=None, crossover_prob=0.9,
                      mutation_rate=None, final_mutation_rate=None, mutation_schedule="exponential"):
    """Sampling, crossover, mutation and repair suited to ``space``'s genome type.

    Binary spaces get :class:`BinaryRandomSampling` or :class:`NearOriginalSampling`,
    :class:`BinaryUniformCrossover` or :class:`BinarySinglePointCrossover` and
    :class:`AdaptiveBitflipMutation`. Real-valued spaces get pymoo's uniform sampling, SBX and
    polynomial mutation. Integer spaces (``vtype is int``: rank and channel levels) get pymoo's
    ``IntegerRandomSampling``, SBX rounded to integers (or pymoo's uniform / single-point
    crossover) and :class:`StepMutation` (+-1 level, document 004). The repair is always
    ``space.repair()``.

    Args:
        space: A :class:`moprune.space.Space`.
        sampling: ``"random"``, ``"near_original"`` (binary only) or a pymoo ``Sampling``.
        keep_prob: Keep probability of the sampling (see the sampling classes; ``None``:
            default of each: per-individual uniform rate for ``"random"``, 0.9 for
            ``"near_original"``).
        crossover: ``"uniform"``, ``"single_point"``, ``"sbx"`` or a pymoo ``Crossover``
            (default: ``"uniform"`` for binary spaces, ``"sbx"`` for real-valued and integer ones).
        crossover_prob: Probability that a mating is crossed.
        mutation_rate: Initial per-gene mutation probability (``None``: operator default).
        final_mutation_rate: Final per-bit flip probability of the adaptive bit-flip.
        mutation_schedule: ``"exponential"``, ``"linear"`` or ``"constant"`` (binary spaces).

    Returns:
        A dict with keys ``sampling``, ``crossover``, ``mutation`` and ``repair``.
    """
    binary = space.vtype is bool
    integer = space.vtype is int
    if isinstance(sampling, str):
        if sampling not in SAMPLINGS:
            raise invalid_value("sampling", f"one of {list(SAMPLINGS)} or a pymoo Sampling", sampling)
        if sampling == "near_original":
            if not binary:
                raise invalid_value("sampling", f"'random' for a {'integer' if integer else 'real-valued'} space",
                                    sampling)
            sampling = NearOriginalSampling(keep_prob=0.9 if keep_prob is None else keep_prob)
        elif binary:
            sampling = BinaryRandomSampling(keep_prob=keep_prob)
        elif integer:
            sampling = IntegerRandomSampling()
        else:
            sampling = FloatRandomSampling()
    if crossover is None:
        crossover = "uniform" if binary else "sbx"
    if isinstance(crossover, str):
        from moprune.validation import check_probability

        crossover_prob = check_probability("crossover_prob", crossover_prob)
        if crossover not in CROSSOVERS or (binary and crossover == "sbx"):
            allowed = [c for c in CROSSOVERS if not (binary and c == "sbx")]
            raise invalid_value("crossover", f"one of {allowed} or a pymoo Crossover", crossover)
        if integer and crossover == "uniform":
            crossover = UniformCrossover(prob=crossover_prob)
        elif integer and crossover == "single_point":
            crossover = SinglePointCrossover(prob=crossover_prob)
        elif crossover == "uniform":
            crossover = BinaryUniformCrossover(prob=crossover_prob)
        elif crossover == "single_point":
            crossover = BinarySinglePointCrossover(prob=crossover_prob)
        elif integer:
            crossover = SBX(prob=crossover_prob, eta=15, vtype=float, repair=RoundingRepair())
        else:
            crossover = SBX(prob=crossover_prob, eta=15)
    if integer:
        mutation = StepMutation(prob_var=mutation_rate)
    elif binary:
        mutation = AdaptiveBitflipMutation(rate=mutation_rate, final_rate=final_mutation_rate,
                                           schedule=mutation_schedule)
    else:
        mutation = PM(eta=20, prob_var=mutation_rate)
    return {"sampling": sampling, "crossover": crossover, "mutation": mutation, "repair": space.repair()}
