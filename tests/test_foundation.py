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


def test_importing_moprune_configures_no_global_state():
    import torch

    state = torch.random.get_rng_state()
    import importlib

    importlib.reload(moprune)
    assert torch.equal(state, torch.random.get_rng_state())
    assert logging.getLogger("moprune").level in (logging.NOTSET, logging.WARNING)
