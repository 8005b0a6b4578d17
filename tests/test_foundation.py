import logging

import pytest

import moprune
from moprune.exceptions import DataError, MopruneError, MopruneValueError
from moprune.io import atomic_path
from moprune.registry import Registry


def test_registry_resolves_and_lists_choices():
    reg = Registry("widget")
    reg.register("b")(int)
    reg.register("a")(float)
    assert reg.get("a") is float and reg.names() == ["a", "b"] and "b" in reg
    with pytest.raises(MopruneValueError) as info:
        reg.get("c")
    assert str(info.value) == "unknown widget 'c'; choose one of: a, b"
    with pytest.raises(MopruneValueError, match="widget 'a' is already registered"):
        reg.register("a")(str)


def test_errors_share_one_base_class():
    assert issubclass(MopruneValueError, ValueError) and issubclass(MopruneValueError, MopruneError)
    assert issubclass(DataError, MopruneError) and not issubclass(DataError, ValueError)


def test_set_verbosity_sets_level_and_adds_one_handler():
    logger = logging.getLogger("moprune")
    before = list(logger.handlers)
    try:
        moprune.set_verbosity("debug")
        moprune.set_verbosity(logging.WARNING)
        assert logger.level == logging.WARNING
        assert len(logger.handlers) == len(before) + (0 if any(getattr(h, "_moprune", False) for h in before) else 1)
        with pytest.raises(MopruneValueError, match=r"level must be one of \['DEBUG', 'ERROR', 'INFO', 'WARNING'\]; got 'loud'"):
            moprune.set_verbosity("loud")
    finally:
        logger.handlers[:] = before


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


_IMPORT_PROBE = r"""
import importlib, json, logging, pkgutil, random
import numpy as np
import torch

before = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), torch.get_num_threads(),
          logging.getLogger().handlers[:], logging.getLogger().level)
import moprune

names = sorted(m.name for m in pkgutil.walk_packages(moprune.__path__, "moprune.") if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
logger = logging.getLogger("moprune")
print(json.dumps({
    "modules": names,
    "torch_rng": bool(torch.equal(before[0], torch.random.get_rng_state())),
    "numpy_rng": bool(np.array_equal(before[1], np.random.get_state()[1])),
    "python_rng": before[2] == random.getstate(),
    "threads": before[3] == torch.get_num_threads(),
    "root_logger": before[4] == logging.getLogger().handlers and before[5] == logging.getLogger().level,
    "moprune_level": logger.level,
    "moprune_handlers": [type(h).__name__ for h in logger.handlers],
}))
"""


@pytest.mark.slow
def test_importing_every_module_configures_no_global_state():
    """A fresh interpreter imports the package and every submodule: no RNG, thread or logging change."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "moprune.algorithms.threshold_ga" in seen["modules"] and "moprune.cli.commands" in seen["modules"]
    assert seen["torch_rng"] and seen["numpy_rng"] and seen["python_rng"]
    assert seen["threads"] and seen["root_logger"]
    assert seen["moprune_level"] in (logging.NOTSET, logging.WARNING)
    assert set(seen["moprune_handlers"]) <= {"NullHandler"}


def _unannotated(qualname, fn, *, method=False):
    """The parameters (and ``return``) of ``fn`` without a type hint."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = list(sig.parameters.values())[1 if method else 0:]
    missing = [f"{qualname}({p.name})" for p in params if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append(f"{qualname} -> ?")
    return missing


def test_the_public_api_is_type_hinted_and_marked_typed():
    import importlib.resources
    import inspect

    missing = []
    for name in sorted(moprune.__all__):
        obj = getattr(moprune, name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(member, property):
                    missing += _unannotated(f"{name}.{attr}", member.fget, method=True)
                elif isinstance(member, (staticmethod, classmethod)):
                    missing += _unannotated(f"{name}.{attr}", member.__func__, method=isinstance(member, classmethod))
                elif inspect.isfunction(member):
                    missing += _unannotated(f"{name}.{attr}", member, method=True)
        elif inspect.isfunction(obj):
            missing += _unannotated(name, obj)
    assert missing == []
    assert importlib.resources.files("moprune").joinpath("py.typed").is_file()
