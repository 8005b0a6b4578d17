"""The ``moprune`` command line.

Argument errors are checked in this process through ``moprune.cli.main([...])`` (no data is
read, nothing trains). Searches run in subprocesses and are marked ``slow``: every one is tiny
(LeNet-5 with a weights file trained in-process on 3,000 MNIST images, 200 validation images
per candidate, populations of 8), and ``OMP_NUM_THREADS=1`` keeps torch from fighting other
processes for the 2 cores.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import evaluator_settings
from moprune.algorithms import ALGORITHMS
from moprune.models import model_names

ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "moprune", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **ENV, **(env or {})}, timeout=600, cwd=cwd)


def cli(capsys, *args):
    """Run ``moprune.cli.main`` in this process: ``(exit code, stdout, stderr)``."""
    from moprune.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse exits after an argument error or --version
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_model_exits_2_listing_the_choices(capsys):
    code, _, err = cli(capsys, "train", "alexnet")
    assert code == 2
    assert "alexnet" in err
    for name in model_names():
        assert name in err


def test_version_is_the_package_version(capsys):
    from moprune import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"moprune {__version__}"


@pytest.mark.slow
def test_python_m_moprune_is_the_command_line():
    from moprune import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"moprune {__version__}"


@pytest.mark.slow
@pytest.mark.integration
def test_train_prints_validation_and_test_accuracy(tmp_path):
    proc = run_cli("train", "lenet5", "--epochs", "1", "--quiet", env={"MOPRUNE_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"validation accuracy ([\d.]+)%.*test accuracy ([\d.]+)%", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) > 90 and float(match.group(2)) > 90
    assert len(list((tmp_path / "weights").glob("*.pt"))) == 1


# ----------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """LeNet-5 trained one epoch on 3,000 MNIST images (about 1 s on one thread)."""
    from moprune.data import load_mnist, subset
    from moprune.models import get_model
    from moprune.train import fit

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = get_model("lenet5")
        data = load_mnist()
        fit(model, subset(data.train, 3000), epochs=2, lr=0.05, batch_size=64,
            generator=torch.Generator().manual_seed(0), progress=False)
    finally:
        torch.set_num_threads(previous)
    path = tmp_path_factory.mktemp("weights") / "lenet5.pt"
    torch.save(model.state_dict(), path)
    return path


def tiny(weights, out, *extra, generations=4, seed=1):
    return ["search", "--model", "lenet5", "--weights", weights, "--val-samples", "200", "--pop-size", "8",
            "--algorithm", "nsga2", "--generations", generations, "--seed", seed, "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def run_a(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    proc = run_cli(*tiny(weights, out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.slow
def test_search_writes_a_run_directory(run_a):
    out, proc = run_a
    assert re.search(r"search finished: 32 candidates .* on the Pareto front, hypervolume 0\.\d+", proc.stdout)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "lenet5" and config["pop_size"] == 8 and config["generations"] == 4
    assert config["seed"] == 1 and config["space"] == "channels" and config["algorithm"] == "nsga2"
    df = pd.read_csv(out / "evaluations.csv", index_col="eval")
    assert len(df) == 32 and list(df.index) == list(range(32))
    assert df["generation"].tolist() == [g for g in range(4) for _ in range(8)]
    assert df["accuracy"].between(0, 1).all() and df["macs_ratio"].between(0, 1).all()
    assert int(re.search(r"(\d+) stopped early as dominated", proc.stdout).group(1)) == \
        int((df["screened"] & ~df["cached"]).sum())  # nsga2 measures every candidate: 0
    assert int(re.search(r"(\d+) confirmed on more validation images", proc.stdout).group(1)) == \
        int((df["confirmed"] & ~df["cached"]).sum())  # only the default search confirms: 0
    assert (out / "checkpoint.pkl").exists() and (out / "result.json").exists() and (out / "genomes.npz").exists()


@pytest.mark.slow
def test_report_prints_the_front_and_writes_files(run_a):
    out, _ = run_a
    proc = run_cli("report", out)
    assert proc.returncode == 0, proc.stderr
    front = pd.read_csv(out / "pareto.csv", index_col="eval")
    assert 1 <= len(front) <= 32
    assert "Pareto front" in proc.stdout and "MACs %" in proc.stdout
    for eval_id in front.index:  # every front row is printed
        assert re.search(rf"^{eval_id}\s", proc.stdout, re.M)
    for name in ("pareto.png", "convergence.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.slow
def test_pick_prints_the_chosen_row(run_a):
    out, _ = run_a
    front = pd.read_csv(out / "pareto.csv", index_col="eval") if (out / "pareto.csv").exists() else None
    proc = run_cli("pick", out, "--method", "knee")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"picked by knee: eval \d+", proc.stdout)
    proc = run_cli("pick", out, "--max-drop", "5")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"picked by max_drop: eval \d+", proc.stdout)
    assert float(re.search(r"drop ([-\d.]+) points", proc.stdout).group(1)) <= 5.0
    del front


@pytest.mark.slow
def test_retrain_prints_accuracy_and_reduction_and_exports(run_a):
    out, _ = run_a
    proc = run_cli("retrain", out, "--pick", "knee", "--epochs", "1", "--train-samples", "2000", "--quiet")
    assert proc.returncode == 0, proc.stderr
    acc = float(re.search(r"test accuracy ([\d.]+)%", proc.stdout).group(1))
    assert 10.0 < acc <= 100.0
    macs = re.search(r"MACs -([\d.]+)% \(([\d.]+)% of the base\)", proc.stdout)
    assert abs(float(macs.group(1)) + float(macs.group(2)) - 100) < 0.2
    import moprune

    model = moprune.load(out / "retrained.pt")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_retrain_reconstructs_by_default_and_not_with_no_reconstruct(run_a, capsys, monkeypatch):
    import moprune.retraining

    seen = []

    class Stop(Exception):
        pass

    def fake_retrain(candidate, **kwargs):
        seen.append(kwargs.get("reconstruct", "missing"))
        raise Stop

    monkeypatch.setattr(moprune.retraining, "retrain", fake_retrain)
    out, _ = run_a
    for extra in ([], ["--no-reconstruct"]):
        with pytest.raises(Stop):
            cli(capsys, "retrain", out, "--pick", "knee", "--epochs", "1", "--quiet", *extra)
    assert seen == [None, False]  # None: moprune.retrain's default (refit where the model has no BatchNorm)


@pytest.mark.slow
def test_retrain_front_writes_the_retrained_front(run_a):
    out, _ = run_a
    proc = run_cli("retrain", out, "--front", "3", "--epochs", "1", "--train-samples", "1000", "--quiet")
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out / "retrained_front.csv", index_col="eval")
    front = pd.read_csv(out / "pareto.csv", index_col="eval") if (out / "pareto.csv").exists() else None
    assert 1 <= len(frame) <= 3 and frame["macs_ratio"].is_monotonic_increasing
    assert frame[["accuracy", "test_accuracy", "search_accuracy"]].stack().between(0, 1).all()
    if front is not None:
        assert frame.index.isin(front.index).all()
    for eval_id, path in frame["path"].items():
        assert os.path.isfile(path) and re.search(rf"^{eval_id}\s", proc.stdout, re.M)
    assert (out / "retrained_front.png").stat().st_size > 1000
    proc = run_cli("retrain", out, "--front", "0", "--quiet")
    assert proc.returncode == 2 and "--front" in proc.stderr
    proc = run_cli("retrain", out, "--front", "2", "--min-macs", "0.5", "--max-macs", "0.2", "--quiet")
    assert proc.returncode == 2 and "--min-macs" in proc.stderr and "0.5" in proc.stderr
    assert frame.equals(pd.read_csv(out / "retrained_front.csv", index_col="eval"))  # nothing rewritten
    proc = run_cli("retrain", out, "--front", "2", "--epochs", "1", "--train-samples", "1000", "--uniform-twins",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    twins = pd.read_csv(out / "retrained_front.csv", index_col="eval")
    assert set(twins["source"]) <= {"search", "uniform"} and "kept" in proc.stdout
    assert np.allclose(twins["accuracy"], np.maximum(twins["search_model_accuracy"], twins["uniform_accuracy"]))
    proc = run_cli("retrain", out, "--front", "2", "--race", "1", "--quiet")
    assert proc.returncode == 2 and "--race" in proc.stderr and "at least 2" in proc.stderr
    proc = run_cli("retrain", out, "--front", "1", "--epochs", "1", "--train-samples", "1000", "--race", "2",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    raced = pd.read_csv(out / "retrained_front.csv", index_col="eval")
    assert (raced["race_contenders"] == 2).all() and "kept" in proc.stdout
    assert set(raced["finalist_source"]) <= {"search", "params_tilt", "search_neighbor", "random"}


@pytest.mark.slow
def test_retrain_within_keeps_the_better_of_the_race_winner_and_uniform_pruning_within_the_budget(run_a, tmp_path):
    out, _ = run_a
    target = tmp_path / "within.pt"
    proc = run_cli("retrain", out, "--within", "0.3", "--race", "2", "--decompose", "1", "--epochs", "1",
                   "--train-samples", "1000", "--output", target, "--quiet")
    assert proc.returncode == 0, proc.stderr
    from moprune.exporting import load_meta

    meta = load_meta(target)
    assert meta["macs_ratio"] <= 0.3 and meta["source"] in {"search", "params_tilt", "search_neighbor", "random",
                                                             "decomposed", "uniform"}
    winner = float(re.search(r"race winner \(\w+\): validation ([\d.]+)%", proc.stdout).group(1))
    uniform = float(re.search(r"uniform pruning: +validation ([\d.]+)%", proc.stdout).group(1))
    kept = float(re.search(r"kept the \w+ model: [\d.]+% of the MACs, [\d.]+% of the parameters, validation "
                           r"([\d.]+)%", proc.stdout).group(1))
    assert kept == max(winner, uniform) and (meta["source"] == "uniform") == (uniform > winner)
    assert abs(100 * meta["val_accuracy"] - kept) < 0.006
    proc = run_cli("retrain", out, "--within", "0.3", "--front", "2", "--quiet")
    assert proc.returncode == 2 and "--within" in proc.stderr and "--front" in proc.stderr
    proc = run_cli("retrain", out, "--within", "1.5", "--quiet")
    assert proc.returncode == 2 and "--within" in proc.stderr and "1.5" in proc.stderr
    proc = run_cli("retrain", out, "--within", "0.0001", "--quiet", "--output", tmp_path / "none.pt")
    assert proc.returncode == 2 and "--within" in proc.stderr and "smallest uniform" in proc.stderr
    assert not (tmp_path / "none.pt").exists()
    proc = run_cli("retrain", out, "--within", "0.3", "--race", "2", "--decompose", "2", "--quiet")
    assert proc.returncode == 2 and "--decompose" in proc.stderr and "2" in proc.stderr
    proc = run_cli("retrain", out, "--front", "1", "--decompose", "1", "--quiet")
    assert proc.returncode == 2 and "--decompose" in proc.stderr and "--within" in proc.stderr


@pytest.mark.slow
def test_export_writes_the_picked_model_and_onnx(run_a, tmp_path):
    out, _ = run_a
    target = tmp_path / "m.pt"
    proc = run_cli("export", out, "--target-macs", "0.6", "--output", target, "--onnx", "--quiet")
    assert proc.returncode == 0, proc.stderr
    import moprune
    from moprune.exporting import load_meta

    model = moprune.load(target)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert load_meta(target)["macs_ratio"] <= 0.6
    assert (tmp_path / "m.onnx").stat().st_size > 1000


@pytest.mark.slow
def test_compare_prints_hypervolumes_and_plots(run_a, weights, tmp_path):
    out_a, _ = run_a
    out_b = tmp_path / "b"
    proc = run_cli(*tiny(weights, out_b, "--algorithm", "random", generations=3))
    assert proc.returncode == 0, proc.stderr
    plot = tmp_path / "cmp.png"
    proc = run_cli("compare", out_a, out_b, "--output", plot)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith(("a ", "b "))}
    assert set(lines) == {"a", "b"}
    assert lines["a"][1] == "1" and lines["a"][2] == "32" and lines["b"][2] == "24"
    assert all(0 < float(lines[k][3]) < 1 for k in lines)
    assert plot.stat().st_size > 1000


# ----------------------------------------------------------------------------- kill and resume
def archive_rows(out):
    """The rows two equal runs share: everything but the wall time (``seconds``)."""
    df = pd.read_csv(out / "evaluations.csv", index_col="eval", dtype={"genome": str, "plan_key": str})
    return df.drop(columns=["seconds"])


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(weights, tmp_path):
    args = ("--finetune-steps", "5", "--train-samples", "500")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "moprune", *map(str, tiny(weights, killed, *args, generations=8))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV})
    csv = killed / "evaluations.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and csv.read_text().count("\n") >= 1 + 8:  # header + generation 0
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    resumed = run_cli("search", "--resume", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    full = run_cli(*tiny(weights, ref, *args, generations=8))
    assert full.returncode == 0, full.stderr
    a, b = archive_rows(killed), archive_rows(ref)
    assert len(a) == 64 and list(a.index) == list(range(64))
    pd.testing.assert_frame_equal(a, b)
    from moprune.runs import load_result

    archives = [load_result(d).archive for d in (killed, ref)]
    assert [(e.plan_key, e.genome.tobytes(), e.accuracy, e.generation, e.objectives, e.cached)
            for e in archives[0]] == [(e.plan_key, e.genome.tobytes(), e.accuracy, e.generation, e.objectives,
                                       e.cached) for e in archives[1]]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("option, value, choices", [
    ("--model", "alexnet", model_names()),
    ("--space", "filters", ["channels", "weights"]),
    ("--algorithm", "cmaes", ALGORITHMS.names()),
    ("--data", "imagenet", ["mnist", "mnist-idx:FOLDER", "cifar10:FOLDER"]),
])
def test_unknown_names_exit_2_listing_the_choices(capsys, tmp_path, option, value, choices):
    code, _, err = cli(capsys, "search", option, value, "--out", tmp_path / "x")
    assert code == 2
    assert value in err
    for choice in choices:
        assert choice in err
    assert not (tmp_path / "x").exists()


def test_an_unknown_option_exits_2_listing_the_options(capsys, tmp_path):
    code, _, err = cli(capsys, "search", "--pop-sise", "4", "--out", tmp_path / "x")
    assert code == 2
    assert "--pop-sise" in err and "--pop-size" in err and "--generations" in err
    code, _, err = cli(capsys, "search", "--algorithm", "nsga2", "--algo-option", "mutation_rat=0.1",
                       "--out", tmp_path / "x")
    assert code == 2 and "mutation_rat" in err and "mutation_rate" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_an_out_folder_holding_another_run_is_refused(run_a, weights):
    out, _ = run_a
    before = (out / "evaluations.csv").read_bytes()
    proc = run_cli(*tiny(weights, out, seed=2))
    assert proc.returncode == 2
    assert "different run" in proc.stderr and "seed" in proc.stderr and "--force" in proc.stderr
    proc = run_cli("search", "--resume", out, "--seed", "2")
    assert proc.returncode == 2 and "seed" in proc.stderr
    assert (out / "evaluations.csv").read_bytes() == before


@pytest.mark.slow
def test_force_starts_over(run_a, weights, tmp_path):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run_a[0], out)
    proc = run_cli(*tiny(weights, out, "--force", generations=2, seed=5))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["seed"] == 5
    assert len(pd.read_csv(out / "evaluations.csv")) == 16


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_a_clear_error_and_the_csv_stays(run_a, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(run_a[0], out)
    (out / "result.json").unlink()
    data = (out / "checkpoint.pkl").read_bytes()
    (out / "checkpoint.pkl").write_bytes(data[: len(data) // 3])
    csv = (out / "evaluations.csv").read_bytes()
    proc = run_cli("search", "--resume", out, "--quiet")
    assert proc.returncode == 2
    assert "checkpoint" in proc.stderr and "corrupt or truncated" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "evaluations.csv").read_bytes() == csv
    assert len(pd.read_csv(out / "evaluations.csv")) == 32


@pytest.mark.slow
def test_config_file_settings(weights, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'model = "lenet5"\nweights = "{weights}"\nval-samples = 200\npop_size = 8\n'
                    'generations = 1\nseed = 7\nalgorithm = "nsga2"\n[algorithm_options]\ncrossover = "single_point"\n')
    proc = run_cli("search", "--config", good, "--seed", "8", "--out", tmp_path / "r", "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["seed"] == 8 and config["val_samples"] == 200  # the command line wins over the file
    assert config["algorithm_options"] == {"crossover": "single_point"}


def test_unknown_config_keys_are_refused(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "lenet5"\npopulation = 8\n')
    code, _, err = cli(capsys, "search", "--config", bad, "--out", tmp_path / "s")
    assert code == 2 and "'population'" in err and "pop_size" in err
    assert not (tmp_path / "s").exists()


def test_bad_values_name_the_setting(capsys, tmp_path):
    code, _, err = cli(capsys, "search", "--pop-size", "1", "--out", tmp_path / "x")
    assert code == 2 and "pop_size" in err and "got 1" in err
    code, _, err = cli(capsys, "report", tmp_path / "nothing")
    assert code == 2 and "not a moprune run directory" in err


@pytest.mark.parametrize("given, expected", [({}, "auto"), ({"finetune_steps": 0}, None),
                                             ({"finetune_steps": 7}, 7)])
def test_finetune_steps_default_is_the_evaluators_auto(monkeypatch, given, expected):
    from moprune.cli import config as cfg

    config = cfg.resolve({"model": "lenet5", **given})
    assert config["finetune_steps"] == given.get("finetune_steps")
    assert evaluator_settings(monkeypatch, config)["finetune"] == expected


def test_negative_finetune_steps_is_refused():
    from moprune.cli import config as cfg
    from moprune.exceptions import MopruneValueError

    with pytest.raises(MopruneValueError, match="finetune_steps must be None or an int >= 0; got -1"):
        cfg.resolve({"model": "lenet5", "finetune_steps": -1})


@pytest.mark.parametrize("given, expected", [({}, "auto"), ({"confirm_samples": "none"}, None),
                                             ({"confirm_samples": "500"}, 500), ({"confirm_samples": 300}, 300)])
def test_confirm_samples_reaches_the_evaluator(monkeypatch, given, expected):
    from moprune.cli import config as cfg

    config = cfg.resolve({"model": "lenet5", **given})
    assert evaluator_settings(monkeypatch, config)["confirm_samples"] == expected


@pytest.mark.parametrize("value", ["many", 0, -5, True, 2.5])
def test_bad_confirm_samples_is_refused_by_name(value):
    from moprune.cli import config as cfg
    from moprune.exceptions import MopruneValueError

    with pytest.raises(MopruneValueError, match=r"confirm_samples must be 'auto', 'none' or a number of "
                                                r"validation images >= 1; got"):
        cfg.resolve({"model": "lenet5", "confirm_samples": value})


def test_a_run_stored_before_confirm_samples_existed_still_matches():
    from moprune.cli import config as cfg
    from moprune.runs import config_differences

    default = cfg.run_config(cfg.resolve({"model": "lenet5"}))
    assert "confirm_samples" not in default  # the default is not stored: older config.json files lack it
    assert config_differences(default, cfg.run_config(cfg.resolve({"model": "lenet5", "confirm_samples": "auto"}))) == []
    other = cfg.run_config(cfg.resolve({"model": "lenet5", "confirm_samples": "none"}))
    assert config_differences(default, other) == ["confirm_samples"]


@pytest.mark.slow
def test_confirm_samples_none_turns_confirmation_off(weights, tmp_path):
    counts = {}
    for value in ("auto", "none"):
        out = tmp_path / value
        proc = run_cli(*tiny(weights, out, "--algorithm", "focused", "--confirm-samples", value, generations=3))
        assert proc.returncode == 0, proc.stderr
        df = pd.read_csv(out / "evaluations.csv", index_col="eval")
        found = re.search(r"(\d+) confirmed on (?:([\d,]+) )?more validation images", proc.stdout)
        counts[value] = int(found.group(1))
        assert counts[value] == int(df["confirmed"].sum())
        # the number of confirmation images is printed, and is the one each confirmed row records
        assert (found.group(2) is None) == (value == "none")
        if found.group(2):
            assert set(df.loc[df["confirmed"], "confirm_images"]) == {int(found.group(2).replace(",", ""))}
        assert ("confirm_samples" in json.loads((out / "config.json").read_text())) == (value == "none")
    assert counts["auto"] > 0 and counts["none"] == 0
