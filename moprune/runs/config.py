"""``config.json``: the resolved settings of a run, written once, atomically."""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Union

from moprune.exceptions import MopruneError
from moprune.io import atomic_path

__all__ = ["CONFIG", "config_differences", "normal_config", "read_config", "write_config"]

CONFIG = "config.json"
PathLike = Union[str, os.PathLike]


def read_config(path: PathLike) -> Optional[Dict[str, Any]]:
    """The ``config.json`` of run directory ``path``, or ``None`` when there is none.

    Raises:
        MopruneError: the file exists but is not a JSON object.
    """
    file = os.path.join(os.fspath(path), CONFIG)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise MopruneError(f"{file} is not a readable run config: {exc}") from None
    if not isinstance(config, dict):
        raise MopruneError(f"{file} is not a run config (a JSON object)")
    return config


def normal_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` as it reads back from JSON (tuples become lists, keys sorted)."""
    return json.loads(json.dumps(dict(config), sort_keys=True))


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> List[str]:
    """Sorted keys whose values differ between two configs (missing keys count)."""
    a, b = normal_config(a), normal_config(b)
    missing = object()
    return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def write_config(path: PathLike, config: Mapping[str, Any]) -> None:
    """Write ``config`` as ``path/config.json`` atomically (a reader sees the old file or the new one)."""
    with atomic_path(os.path.join(os.fspath(path), CONFIG)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(normal_config(config), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
