"""Devices and worker processes: same records wherever candidates run, clean shutdowns, faults."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from worker_spaces import KillingSpace

import moprune
from conftest_search import make_data, tiny_model, tiny_problem
from moprune.devices import available_devices, check_amp, resolve_device
from moprune.evaluation import Evaluator
from moprune.evaluation.workers import MAX_RETRIES, default_threads
from moprune.exceptions import MopruneValueError
from moprune.problem import PruningProblem
from moprune.runs import prepare_run, run_search
from moprune.train import evaluate, fit

TESTS = os.path.dirname(os.path.abspath(__file__))
FINETUNE = {"finetune": {"steps": 4, "batch_size": 32}, "train_data": make_data(400, seed=5)}
RUN = {"pop_size": 8, "n_gen": 3, "seed": 3}


def archive_key(archive):
    """Everything of an archive but the wall time."""
    return [(e.plan_key, e.genome.tobytes(), e.accuracy, e.generation, e.objectives, e.feasible, e.cached, e.error)
            for e in archive]


def record_key(r):
    """A record's plan, accuracy (nan as None, so that equal failures compare equal) and error."""
    return r.plan_key, None if np.isnan(r.accuracy) else r.accuracy, r.error


def gone(pid):
    """Whether process ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not gone(p)]


# ----------------------------------------------------------------------------- devices
def test_devices_resolve_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert available_devices()[-1] == "cpu"
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if "mps" in available_devices() else "cpu")
    assert auto.type == expected and resolve_device(None) == auto


def test_an_unknown_or_missing_device_is_a_clear_error():
    with pytest.raises(MopruneValueError, match=r"^device must be one of \['auto', 'cpu', 'cuda', 'cuda:N', 'mps'\]"):
        resolve_device("tpu")
    with pytest.raises(MopruneValueError, match="device must be one of"):
        resolve_device(3)
    missing = "cuda:64" if torch.cuda.is_available() else "cuda"
    with pytest.raises(MopruneValueError, match=rf"^device must be a device this machine has \(.*cpu\).*'{missing}'"):
        resolve_device(missing)
    with pytest.raises(MopruneValueError, match=r"^devices\[1\] must be a device this machine has"):
        Evaluator(make_data(50, 1), devices=["cpu", missing])
    with pytest.raises(MopruneValueError, match=r"^device must be a device this machine has"):
        fit(tiny_model(), make_data(50, 1), device=missing, progress=False)
    with pytest.raises(MopruneValueError, match=r"^device must be a device this machine has"):
        Evaluator(make_data(50, 1), device=missing)


def test_devices_are_public_and_reach_the_space_s_taylor_importance():
    from moprune.models import get_model

    assert moprune.resolve_device is resolve_device and moprune.available_devices is available_devices
    model = get_model("lenet5").eval()
    batch = torch.rand(16, 1, 28, 28)
    with pytest.raises(MopruneValueError, match=r"^device must be a device this machine has"):
        moprune.ChannelSpace(model, importance="taylor", importance_data=batch, device="cuda:64")
    here = moprune.ChannelSpace(model, importance="taylor", importance_data=batch, device="cpu")
    auto = moprune.ChannelSpace(model, importance="taylor", importance_data=batch)
    assert here.keep_order().tolist() == auto.keep_order().tolist()
    assert next(here.model.parameters()).device == torch.device("cpu")


def test_amp_is_checked_and_cuda_only():
    assert check_amp(None, torch.device("cpu")) is None
    with pytest.raises(MopruneValueError, match=r"^amp must be one of \[None, 'bf16', 'fp16'\]; got 'fp8'"):
        Evaluator(make_data(50, 1), device="cpu", amp="fp8")
    with pytest.raises(MopruneValueError, match=r"^amp must be None on device 'cpu'"):
        Evaluator(make_data(50, 1), device="cpu", amp="bf16")
    if torch.cuda.is_available():
        assert check_amp("bf16", torch.device("cuda", 0)) is torch.bfloat16


def test_worker_arguments_are_checked():
    data = make_data(50, 1)
    with pytest.raises(MopruneValueError, match="^workers must be"):
        Evaluator(data, workers=0)
    with pytest.raises(MopruneValueError, match="^devices must be None or a non-empty list"):
        Evaluator(data, devices="cpu")
    with pytest.raises(MopruneValueError, match="^devices must be None or a non-empty list"):
        Evaluator(data, devices=[])
    assert Evaluator(data, devices=["cpu", "cpu"]).workers == 2
    assert Evaluator(data).workers is None and Evaluator(data).worker_pids == []
    assert default_threads(1) >= default_threads(2) >= 1 and default_threads(10_000) == 1


def test_the_evaluator_keeps_its_subsets_on_its_device_and_pickles_without_them():
    import pickle

    ev = Evaluator(make_data(300, 2), n_samples=100, device="cpu", workers=2)
    assert ev.val_subset.tensors[0].device == ev.device == torch.device("cpu")
    clone = pickle.loads(pickle.dumps(ev))
    assert clone._val is None and clone._pool is None and clone.workers == 2


def _accelerator():
    here = [d for d in available_devices() if d != "cpu"]
    return here[0] if here else None


def test_cpu_and_accelerator_find_the_same_models():
    device = _accelerator()
    if device is None:
        reason = f"no CUDA or MPS device on this machine (available: {', '.join(available_devices())})"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    results = {}
    for where in ("cpu", device):
        problem = tiny_problem(device=where, **FINETUNE)
        results[where] = moprune.search(problem, "nsga2", **RUN).archive
    cpu, acc = results["cpu"], results[device]
    assert [e.plan_key for e in cpu] == [e.plan_key for e in acc]
    np.testing.assert_allclose([e.accuracy for e in cpu], [e.accuracy for e in acc], atol=0.01)
    model = tiny_model()
    assert evaluate(model, make_data(300, 2), device="cpu") == pytest.approx(
        evaluate(model, make_data(300, 2), device=device), abs=0.01)
    model.to("cpu")


# ----------------------------------------------------------------------------- workers
@pytest.fixture(scope="module")
def one_process():
    """The reference: a search with fine-tuning in the loop, in this process."""
    return moprune.search(tiny_problem(**FINETUNE), "nsga2", **RUN)


@pytest.mark.slow
def test_two_workers_give_the_same_archive_and_stop_after_the_search(one_process):
    problem = tiny_problem(workers=2, **FINETUNE)
    seen = []
    result = moprune.search(problem, "nsga2", callbacks=[lambda a, p: seen.append(p.evaluator.worker_pids)], **RUN)
    assert archive_key(result.archive) == archive_key(one_process.archive)
    assert problem.evaluator.counters() == {"n_evaluated": 24, "n_cached": 0, "n_failed": 0}
    assert len(seen) == 3 and len(seen[0]) == 2 and seen[0] == seen[-1]  # one pool for the whole search
    assert problem.evaluator.worker_pids == []
    assert wait_gone(seen[0], timeout=1.0) == []


@pytest.mark.slow
def test_a_worker_killed_mid_evaluation_is_replaced_and_the_archive_is_unchanged(one_process, tmp_path):
    marker = tmp_path / "kill-once"
    marker.write_text("")
    problem = tiny_problem(workers=2, **FINETUNE)
    problem.space.__class__ = KillingSpace  # the same space, whose materialize kills one worker once
    problem.space.kill_key, problem.space.kill_once_file = None, str(marker)
    pids = []

    def kill_from_outside(algorithm, root):  # and one more, killed between generations
        pids.append(root.evaluator.worker_pids)
        if root.generation == 0:
            os.kill(pids[0][1], signal.SIGKILL)

    with problem.evaluator:
        result = moprune.search(problem, "nsga2", callbacks=[kill_from_outside], **RUN)
        restarts = problem.evaluator._pool.n_restarts
    assert not marker.exists()
    assert restarts == 2 and pids[0] != pids[-1]
    assert archive_key(result.archive) == archive_key(one_process.archive)
    assert problem.evaluator.counters()["n_failed"] == 0


@pytest.mark.slow
def test_failing_candidates_in_workers_are_recorded_as_in_one_process():
    model = tiny_model()
    X = np.ones((5, 64), dtype=bool)
    X[1, :20] = X[2, 40:] = X[3, 5:] = X[4, ::2] = False
    space = KillingSpace(model)
    keys = [space.decode(x).key for x in X]
    raise_in = KillingSpace(model, fail_key=keys[1])
    local = Evaluator(make_data(300, 2), n_samples=None, num_threads=1)
    expected = local.evaluate(raise_in, X[[0, 1, 3, 4]])
    assert expected[1].failed and expected[1].error == "RuntimeError: materialize failed on purpose"

    workers = Evaluator(make_data(300, 2), n_samples=None, num_threads=1, workers=2)
    with workers:
        deadly = KillingSpace(model, fail_key=keys[1], kill_key=keys[2])
        records = workers.evaluate(deadly, X)
        assert workers._pool.n_restarts == MAX_RETRIES + 1
        assert records[2].failed and records[2].error.startswith("WorkerDied: the worker process died 3 times")
        same = [records[i] for i in (0, 1, 3, 4)]
        assert [record_key(r) for r in same] == [record_key(r) for r in expected]
        assert workers.counters() == {"n_evaluated": 5, "n_cached": 0, "n_failed": 2}
        # a rebased space (two_step's retrained elite) reaches the running workers
        rebased = KillingSpace(_shifted(model))
        workers.cache.clear()  # as PruningProblem.rebase does
        again = workers.evaluate(rebased, X[[0, 4]])
        mine = Evaluator(make_data(300, 2), n_samples=None, num_threads=1).evaluate(rebased, X[[0, 4]])
        assert [r.accuracy for r in again] == [r.accuracy for r in mine] and not any(r.cached for r in again)
        assert [r.accuracy for r in again] != [r.accuracy for r in same[0:4:3]]
        pids = workers.worker_pids
    assert wait_gone(pids, timeout=1.0) == []


@pytest.mark.slow
def test_screening_bounds_reach_the_workers():
    local = tiny_problem()
    expected = moprune.search(local, n_evals=50, seed=2)  # the default search screens
    assert sum(e.screened for e in expected.archive) >= 3
    problem = tiny_problem(workers=2)
    result = moprune.search(problem, n_evals=50, seed=2)
    assert [k + (e.screened,) for k, e in zip(archive_key(result.archive), result.archive)] == \
        [k + (e.screened,) for k, e in zip(archive_key(expected.archive), expected.archive)]


def _shifted(model):
    import copy

    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted[-1].bias.add_(torch.linspace(-2.0, 2.0, shifted[-1].bias.numel()))
    return shifted


@pytest.mark.slow
def test_an_error_in_the_search_shuts_the_workers_down():
    problem = tiny_problem(workers=2)
    pids = []

    def boom(algorithm, root):
        pids.extend(root.evaluator.worker_pids)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        moprune.search(problem, "nsga2", callbacks=[boom], **RUN)
    assert len(pids) == 2 and problem.evaluator.worker_pids == []
    assert wait_gone(pids, timeout=1.0) == []


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_workers(tmp_path, one_process):
    config = {"model": "tiny", "pop_size": 8, "generations": 3, "seed": 3}
    path = tmp_path / "run"
    prepare_run(path, config)

    def stop(algorithm, root):
        if root.generation == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(path, tiny_problem(workers=2, **FINETUNE), "nsga2", callbacks=[stop], **RUN)
    prepare_run(path, config, resume=True)
    result = run_search(path, tiny_problem(workers=1, **FINETUNE), "nsga2", resume=True, **RUN)
    assert archive_key(result.archive) == archive_key(one_process.archive)


SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
import moprune
from conftest_search import make_data, tiny_problem

def publish(algorithm, root):
    with open({pids!r} + ".tmp", "w") as f:
        f.write(" ".join(map(str, root.evaluator.worker_pids)))
    os.replace({pids!r} + ".tmp", {pids!r})

if __name__ == "__main__":
    problem = tiny_problem(workers=2, finetune={{"steps": 20, "batch_size": 32}}, train_data=make_data(400, 5))
    moprune.search(problem, "nsga2", pop_size=8, n_gen=10_000, seed=0, callbacks=[publish])
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "parent killed"])
def test_no_worker_outlives_its_search(tmp_path, how):
    pid_file = tmp_path / "pids"
    script = tmp_path / "run_search.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=TESTS, pids=str(pid_file))))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), proc.communicate(timeout=10)[0].decode()[-2000:]
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        if how == "ctrl-c":  # a terminal's Ctrl-C reaches the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        output = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode != 0
        if how == "ctrl-c":
            assert "KeyboardInterrupt" in output and "Traceback" in output
        assert wait_gone(pids) == [], output[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_importing_moprune_imports_neither_ray_nor_a_pool():
    code = ("import sys, moprune, moprune.evaluation, moprune.searching; "
            "print(sorted(m for m in ('ray', 'moprune.evaluation.workers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_problem_accepts_a_worker_evaluator_without_starting_it():
    problem = PruningProblem(KillingSpace(tiny_model()), Evaluator(make_data(300, 2), workers=2, num_threads=1))
    assert problem.base_accuracy > 0.5 and problem.evaluator.worker_pids == []


def _two_step_problem(workers):
    """A random MLP's channel space (fine-tuning the elite helps it a lot), as in test_two_step."""
    from torch import nn
    from torch.utils.data import TensorDataset

    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(123))

    def data(n, seed):
        x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        return TensorDataset(x, (x @ w).argmax(1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    evaluator = Evaluator(data(300, 2), n_samples=None, train_data=data(1000, 1), num_threads=1, workers=workers,
                          finetune=None)
    return PruningProblem(moprune.ChannelSpace(model, torch.zeros(1, 6)), evaluator)


@pytest.mark.slow
def test_two_step_rebases_the_space_of_running_workers():
    results = []
    for workers in (None, 2):
        rounds = []
        results.append(moprune.search(_two_step_problem(workers), "two_step", pop_size=6, n_gen=6, seed=0,
                                      retrain_steps=60, retrain_lr=0.1,
                                      callbacks=[lambda algorithm, _: rounds.append(algorithm.retrain_losses)]))
        assert len(rounds[-1]) >= 1  # the elite was retrained and the space rebased mid-search
    assert archive_key(results[0].archive) == archive_key(results[1].archive)
