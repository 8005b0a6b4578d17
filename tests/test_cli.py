import os
import re
import subprocess
import sys

import pytest

from moprune.models import model_names


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "moprune", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_unknown_model_exits_2_listing_the_choices():
    proc = run_cli("train", "alexnet")
    assert proc.returncode == 2
    assert "alexnet" in proc.stderr
    for name in model_names():
        assert name in proc.stderr


def test_version_is_the_package_version():
    from moprune import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"moprune {__version__}"


@pytest.mark.integration
def test_train_prints_validation_and_test_accuracy(tmp_path):
    proc = run_cli("train", "lenet5", "--epochs", "1", "--quiet", env={"MOPRUNE_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"validation accuracy ([\d.]+)%.*test accuracy ([\d.]+)%", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) > 90 and float(match.group(2)) > 90
    assert len(os.listdir(tmp_path / "weights")) == 1
