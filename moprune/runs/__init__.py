"""Run directories: a search that writes its evaluations as it goes, survives being killed, and
can be read without running any code from it.

A run directory holds:

- ``config.json``: the resolved settings (two runs are "the same run" when their configs are
  equal); written once, atomically, after the directory's lock is taken.
- ``.lock``: an advisory ``flock`` held by the one process writing the run, with its PID inside
  (:mod:`moprune.runs.locking`); the OS frees it when that process dies.
- ``evaluations.csv``: one row per candidate (the columns of :func:`moprune.results.to_frame`,
  the genome as a string), appended after every generation, flushed and fsynced
  (:mod:`moprune.runs.evaluations`).
- ``checkpoint.pkl``: what ``--resume`` continues from, written atomically after every
  generation: a pickle (pymoo's algorithm state needs one) authenticated with an HMAC under the
  user's secret key, checked before anything is unpickled (:mod:`moprune.runs.checkpoint`).
- ``progress.json``, then ``genomes.npz`` and ``result.json`` when finished: data-only files
  from which :func:`load_result` rebuilds the :class:`moprune.SearchResult`
  (:mod:`moprune.runs.stored`). Reading a run never unpickles.

A run killed at any moment (SIGKILL included) is continued by :func:`run_search` with
``resume=True``: ``evaluations.csv`` is cut back to the size recorded in the last checkpoint,
and the generation that was interrupted is run again from the checkpointed algorithm, cache and
random states. Evaluation is deterministic per plan, so the archive ends equal to that of an
uninterrupted run with the same seed.

Example:
    >>> prepare_run("runs/a", config)     # mkdir, lock, write config.json
    >>> result = run_search("runs/a", problem, "nsga2", pop_size=20, n_gen=10, seed=0)
    >>> load_result("runs/a").n_evals     # from data-only files
    200
"""

from moprune.runs.checkpoint import CHECKPOINT, KEY_FILE, CheckpointError, checkpoint_key, key_path, load_checkpoint
from moprune.runs.config import CONFIG, config_differences, read_config, write_config
from moprune.runs.directory import PREVIOUS_EVALUATIONS, REPORT_FILES, RUN_FILES, abandon_run, prepare_run
from moprune.runs.evaluations import (
                                      EVALUATIONS,
                                      archive_from_frame,
                                      decode_genome,
                                      encode_genome,
                                      read_evaluations,
                                      records_from_frame,
)
from moprune.runs.locking import LOCK, RunLockedError, lock_holder
from moprune.runs.loop import run_search
from moprune.runs.stored import GENOMES, PROGRESS, RESULT, is_finished, load_result

__all__ = [
    "CHECKPOINT", "CONFIG", "EVALUATIONS", "GENOMES", "KEY_FILE", "LOCK", "PREVIOUS_EVALUATIONS", "PROGRESS",
    "REPORT_FILES", "RESULT", "RUN_FILES", "CheckpointError", "RunLockedError", "abandon_run", "archive_from_frame",
    "checkpoint_key", "config_differences", "decode_genome", "encode_genome", "is_finished", "key_path",
    "load_checkpoint", "load_result", "lock_holder", "prepare_run", "read_config", "read_evaluations",
    "records_from_frame", "run_search", "write_config",
]
