"""What every study script shares: its output folder and the record of how its results were made.

Each study writes ``record.json`` next to its outputs: the exact command, the wall time, the
moprune version and git commit that produced it, and the machine. Files are written atomically.
"""

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, Optional

import pandas as pd
import torch

import moprune
from moprune.io import atomic_path
from moprune.operators.pruning import uniform_genome  # noqa: F401  (re-exported for the studies)

# uniform_genome is what a plain Torch-Pruning user gets at a MACs ratio; the studies retrain it beside the
# search's models. Before 2026-12-04 the studies had their own copy (grid 0.005..1, without the space's repair).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when moprune/ has uncommitted changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "moprune"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that runs this script again, from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([".venv/bin/python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


STARTED = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
START_COMMIT = git_commit()
"""The commit the study started from (the code it imported), read when the script imports this module."""


def write_record(folder: str, *, wall_s: float, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``record.json`` (command, wall time, versions, machine) into ``folder`` and return it."""
    record = {
        "command": command_line(),
        "wall_s": round(wall_s, 1),
        "started": STARTED,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "moprune": moprune.__version__,
        "commit": START_COMMIT,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        **(extra or {}),
    }
    with atomic_path(os.path.join(folder, "record.json")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
    return record


def write_csv(frame: pd.DataFrame, path: str, **kwargs: Any) -> None:
    """``frame.to_csv(path)``, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def save_figure(fig: Any, path: str) -> None:
    """Save a matplotlib figure atomically (PNG, 120 dpi)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


