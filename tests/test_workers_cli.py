"""``--workers``, ``--device``, ``--backend`` and ``--ray-address`` on the command line and in TOML configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import evaluator_settings
from moprune.devices import available_devices
from moprune.evaluation.ray_pool import ray_installed

ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
MISSING = "cuda:64" if torch.cuda.is_available() else "cuda"


def cli(capsys, *args):
    from moprune.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", [("search", "--out", "x"), ("train", "lenet5"), ("retrain", "x"), ("demo",)])
def test_a_device_this_machine_lacks_exits_2_naming_what_it_has(capsys, tmp_path, command):
    args = [a if a != "x" else tmp_path / "x" for a in command]
    code, _, err = cli(capsys, *args, "--device", MISSING, *(["--out", tmp_path / "d"] if command == ("demo",) else []))
    assert code == 2, err
    assert f"device must be a device this machine has ({', '.join(available_devices())})" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()


def test_bad_workers_name_the_setting(capsys, tmp_path):
    code, _, err = cli(capsys, "search", "--workers", "0", "--out", tmp_path / "x")
    assert code == 2 and "workers must be" in err and "got 0" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('workers = "many"\n')
    code, _, err = cli(capsys, "search", "--config", bad, "--out", tmp_path / "y")
    assert code == 2 and "workers must be" in err and "'many'" in err


def test_bad_backends_name_the_setting(capsys, tmp_path):
    code, _, err = cli(capsys, "search", "--backend", "dask", "--out", tmp_path / "x")
    assert code == 2 and "invalid choice: 'dask'" in err
    code, _, err = cli(capsys, "search", "--ray-address", "auto", "--out", tmp_path / "x")
    assert code == 2 and "backend must be 'ray' when ray_address is given; got 'local'" in err
    code, _, err = cli(capsys, "search", "--backend", "ray", "--out", tmp_path / "x")
    assert code == 2 and "workers must be a number of Ray actors with backend 'ray'" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "ray"\nworkers = 2\nray-address = 5\n')
    code, _, err = cli(capsys, "search", "--config", bad, "--out", tmp_path / "y")
    assert code == 2 and "ray_address must be 'auto' or 'ray://host:port'; got 5" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_backend_is_a_machine_setting_passed_to_the_evaluator(monkeypatch):
    from moprune.cli import config as cfg

    config = cfg.resolve({"model": "lenet5", "workers": 2, "backend": "ray", "ray_address": "auto"}) \
        if ray_installed() else cfg.resolve({"model": "lenet5", "workers": 2})
    assert "backend" not in cfg.run_config(config) and "ray_address" not in cfg.run_config(config)
    assert cfg.machine_settings({})["backend"] == "local"
    seen = evaluator_settings(monkeypatch, config)
    assert (seen["workers"], seen["backend"], seen["address"]) == \
        ((2, "ray", "auto") if ray_installed() else (2, "local", None))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """LeNet-5 trained two epochs on 3,000 MNIST images."""
    from moprune.data import load_mnist, subset
    from moprune.models import get_model
    from moprune.train import fit

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = get_model("lenet5")
        fit(model, subset(load_mnist().train, 3000), epochs=2, lr=0.05, batch_size=64,
            generator=torch.Generator().manual_seed(0), progress=False, device="cpu")
    finally:
        torch.set_num_threads(previous)
    path = tmp_path_factory.mktemp("weights") / "lenet5.pt"
    torch.save(model.state_dict(), path)
    return path


def settings(weights):
    return (f'model = "lenet5"\nweights = "{weights}"\nval-samples = 200\npop_size = 8\ngenerations = 3\n'
            'seed = 1\nalgorithm = "nsga2"\nfinetune_steps = 3\ntrain_samples = 300\n')


def rows(out):
    df = pd.read_csv(out / "evaluations.csv", index_col="eval", dtype={"genome": str, "plan_key": str})
    return df.drop(columns=["seconds"])


@pytest.mark.slow
def test_workers_from_a_toml_config_and_a_resume_with_another_number(weights, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(settings(weights) + 'workers = 2\ndevice = "cpu"\n')
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen([sys.executable, "-m", "moprune", "search", "--config", str(config), "--out", str(killed),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV},
                            start_new_session=True)
    csv = killed / "evaluations.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and csv.read_text().count("\n") >= 1 + 8:  # header + generation 0
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the search and its workers
    proc.communicate()
    stored = json.loads((killed / "config.json").read_text())
    assert not set(stored) & {"workers", "device", "backend", "ray_address"}  # where it runs is not what the run is
    # resumed with another number of workers, on Ray actors where Ray is installed
    where = ["--workers", "1"] + (["--backend", "ray"] if ray_installed() else [])
    resumed = subprocess.run([sys.executable, "-m", "moprune", "search", "--resume", str(killed), *where,
                              "--quiet"], capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    (tmp_path / "ref.toml").write_text(settings(weights))
    full = subprocess.run([sys.executable, "-m", "moprune", "search", "--config", str(tmp_path / "ref.toml"),
                           "--out", str(ref), "--quiet"], capture_output=True, text=True, env={**os.environ, **ENV},
                          timeout=600)
    assert full.returncode == 0, full.stderr
    a, b = rows(killed), rows(ref)
    assert len(a) == 24
    pd.testing.assert_frame_equal(a, b)
