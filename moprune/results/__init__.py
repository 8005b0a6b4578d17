"""Turn a :class:`~moprune.archive.SearchResult` into tables: every candidate, the Pareto front,
one picked trade-off, hypervolume, and algorithm comparisons over seeds.

Everything here is a pure function over the archive (no network runs). Objectives are named as
in :attr:`SearchResult.objectives` and mapped to frame columns, all minimised:

========== =================================
objective  column used (minimised)
========== =================================
error      ``error`` (1 - validation accuracy)
macs       ``macs_ratio``
params     ``params_ratio``
sparsity   ``1 - sparsity`` (the density)
accuracy   ``1 - accuracy``
========== =================================

Column names (``"macs_ratio"``, ``"params_ratio"``, ``"accuracy_drop"``...) are accepted too,
and any other name ``x`` falls back to the ``objective_x`` column (the raw value written to
pymoo's ``F``).
"""

from moprune.results.frame import DEFAULT_OBJECTIVES, genome_hash, objective_matrix, pareto_front, to_frame
from moprune.results.indicators import compare, default_grid, hypervolume, hypervolume_curve
from moprune.results.picking import PICK_METHODS, pick

__all__ = [
    "DEFAULT_OBJECTIVES",
    "PICK_METHODS",
    "compare",
    "default_grid",
    "genome_hash",
    "hypervolume",
    "hypervolume_curve",
    "objective_matrix",
    "pareto_front",
    "pick",
    "to_frame",
]
