"""The Ray backend: same records as one process, faults, resume across backends, arguments.

Starting Ray costs seconds, so the tests share one local instance (the module's ``ray_instance``
fixture), except the first, which checks that an evaluator starts and shuts down its own. They
are skipped where Ray is not installed; ``make test`` installs it (the ``ray`` extra).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from test_workers import FINETUNE, RUN, TESTS, _shifted, archive_key, gone, record_key, wait_gone
from worker_spaces import KillingSpace

import moprune
from conftest_search import make_data, tiny_model, tiny_problem
from moprune.evaluation import Evaluator
from moprune.evaluation.ray_pool import INSTALL, ray_installed, start_local
from moprune.evaluation.workers import MAX_RETRIES
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.runs import prepare_run, run_search

needs_ray = pytest.mark.skipif(not ray_installed(), reason='Ray is not installed (pip install "moprune[ray]"; '
                                                          "make test installs it)")


# ----------------------------------------------------------------------------- without Ray running
def test_backend_arguments_are_checked(monkeypatch):
    data = make_data(50, 1)
    with pytest.raises(MopruneValueError, match=r"^backend must be one of \['local', 'ray'\]; got 'dask'$"):
        Evaluator(data, workers=2, backend="dask")
    with pytest.raises(MopruneValueError, match=r"^backend, address must be 'ray' when address is given"):
        Evaluator(data, workers=2, address="auto")
    with pytest.raises(MopruneValueError, match=r"^address must be None, 'auto' or 'ray://host:port'; got 3"):
        Evaluator(data, workers=2, backend="ray", address=3)
    with pytest.raises(MopruneValueError, match=r"^workers must be a number of Ray actors with backend='ray'"):
        Evaluator(data, backend="ray")
    with pytest.raises(MopruneValueError, match=r"^devices must be None with backend='ray'"):
        Evaluator(data, backend="ray", devices=["cpu", "cpu"])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MopruneError, match=r"^backend='ray' needs Ray, which is not installed here; install it "
                                           r"with: pip install \"moprune\[ray\]\"$"):
        Evaluator(data, workers=2, backend="ray")
    assert INSTALL == 'pip install "moprune[ray]"'


@needs_ray
@pytest.mark.slow
def test_a_ray_evaluator_imports_ray_only_when_it_starts_its_actors():
    code = ("import sys, moprune; from moprune.evaluation import Evaluator; "
            "sys.path.insert(0, {tests!r}); from conftest_search import make_data; "
            "ev = Evaluator(make_data(50, 1), workers=2, backend='ray'); "
            "print(ev.backend, ev.worker_pids, 'ray' in sys.modules)").format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ray [] False", out.stderr
    out = subprocess.run([sys.executable, "-c", "import moprune, sys; assert 'ray' not in sys.modules"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ----------------------------------------------------------------------------- an evaluator's own instance
@needs_ray
@pytest.mark.slow
def test_failing_candidates_on_ray_actors_are_recorded_as_in_one_process_and_the_instance_is_shut_down():
    """Runs first: the evaluator starts its own local instance, and close() shuts it down."""
    import ray

    assert not ray.is_initialized(), "this test must run before the module's shared Ray instance starts"
    model = tiny_model()
    X = np.ones((5, 64), dtype=bool)
    X[1, :20] = X[2, 40:] = X[3, 5:] = X[4, ::2] = False
    space = KillingSpace(model)
    keys = [space.decode(x).key for x in X]
    local = Evaluator(make_data(300, 2), n_samples=None, num_threads=1)
    expected = local.evaluate(KillingSpace(model, fail_key=keys[1]), X[[0, 1, 3, 4]])
    assert expected[1].failed and expected[1].error == "RuntimeError: materialize failed on purpose"

    actors = Evaluator(make_data(300, 2), n_samples=None, num_threads=1, workers=2, backend="ray")
    with actors:
        deadly = KillingSpace(model, fail_key=keys[1], kill_key=keys[2])
        records = actors.evaluate(deadly, X)
        assert ray.is_initialized() and actors._pool.n_restarts == MAX_RETRIES + 1
        assert records[2].failed
        assert records[2].error.startswith("WorkerDied: the worker process died 3 times evaluating this candidate "
                                           "(a Ray actor: ")
        assert [record_key(r) for r in (records[0], records[1], records[3], records[4])] == \
            [record_key(r) for r in expected]
        assert actors.counters() == {"n_evaluated": 5, "n_cached": 0, "n_failed": 2}
        # a rebased space (two_step's retrained elite) reaches the running actors
        rebased = KillingSpace(_shifted(model))
        actors.cache.clear()
        again = actors.evaluate(rebased, X[[0, 4]])
        mine = Evaluator(make_data(300, 2), n_samples=None, num_threads=1).evaluate(rebased, X[[0, 4]])
        assert [r.accuracy for r in again] == [r.accuracy for r in mine]
        assert [r.accuracy for r in again] != [records[0].accuracy, records[4].accuracy]
        pids = actors.worker_pids
        assert len(pids) == 2
    assert not ray.is_initialized() and actors.worker_pids == []
    assert wait_gone(pids, timeout=15.0) == []


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
    problem = tiny_problem(workers=2, backend="ray", finetune={{"steps": 20, "batch_size": 32}},
                           train_data=make_data(400, 5))
    moprune.search(problem, "nsga2", pop_size=8, n_gen=10_000, seed=0, callbacks=[publish])
"""


def _group(pgid):
    """Process ids of the live processes in process group ``pgid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(name))
    return found


@needs_ray
@pytest.mark.slow
def test_ctrl_c_stops_a_ray_search_and_its_local_instance(tmp_path):
    """Runs before the shared instance starts too: the search in a child process starts its own."""
    pid_file = tmp_path / "pids"
    script = tmp_path / "run_search.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=TESTS, pids=str(pid_file))))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), proc.communicate(timeout=10)[0].decode()[-2000:]
        actors = [int(p) for p in pid_file.read_text().split()]
        ray_processes = [p for p in _group(proc.pid) if p != proc.pid]  # GCS, raylet, agents
        assert len(actors) == 2 and not any(gone(p) for p in actors) and len(ray_processes) >= 2
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        output = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode != 0 and "KeyboardInterrupt" in output, output[-2000:]
        assert wait_gone(actors + ray_processes, timeout=30.0) == [], output[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- a shared instance
@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the rest of the module (evaluators use it and leave it running)."""
    import ray

    assert start_local(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_process():
    """The reference: a search with fine-tuning in the loop, in this process."""
    return moprune.search(tiny_problem(**FINETUNE), "nsga2", **RUN)


@needs_ray
@pytest.mark.slow
def test_two_ray_actors_give_the_archive_of_one_process(ray_instance, one_process):
    problem = tiny_problem(workers=2, backend="ray", **FINETUNE)
    seen = []
    result = moprune.search(problem, "nsga2", callbacks=[lambda a, p: seen.append(p.evaluator.worker_pids)], **RUN)
    assert archive_key(result.archive) == archive_key(one_process.archive)
    assert problem.evaluator.counters() == {"n_evaluated": 24, "n_cached": 0, "n_failed": 0}
    assert len(seen) == 3 and len(seen[0]) == 2 and seen[0] == seen[-1]  # one pool for the whole search
    assert problem.evaluator.worker_pids == [] and ray_instance.is_initialized()  # not this evaluator's instance
    assert wait_gone(seen[0], timeout=15.0) == []


@needs_ray
@pytest.mark.slow
def test_a_ray_actor_killed_mid_run_is_replaced_and_the_archive_is_unchanged(ray_instance, one_process, tmp_path):
    marker = tmp_path / "kill-once"
    marker.write_text("")
    problem = tiny_problem(workers=2, backend="ray", **FINETUNE)
    problem.space.__class__ = KillingSpace  # the same space, whose materialize kills one actor once
    problem.space.kill_key, problem.space.kill_once_file = None, str(marker)
    pids = []

    def kill_from_outside(algorithm, root):  # and one more, killed by its pid between generations
        pids.append(root.evaluator.worker_pids)
        if root.generation == 0:
            os.kill(pids[0][1], signal.SIGKILL)

    with problem.evaluator:
        result = moprune.search(problem, "nsga2", callbacks=[kill_from_outside], **RUN)
        restarts = problem.evaluator._pool.n_restarts
    assert not marker.exists()
    assert restarts == 2 and pids[0][1] not in pids[-1]
    assert archive_key(result.archive) == archive_key(one_process.archive)
    assert problem.evaluator.counters()["n_failed"] == 0


@needs_ray
@pytest.mark.slow
def test_a_run_started_with_local_workers_resumes_on_ray_actors(ray_instance, one_process, tmp_path):
    config = {"model": "tiny", "pop_size": 8, "generations": 3, "seed": 3}
    path = tmp_path / "run"
    prepare_run(path, config)

    def stop(algorithm, root):
        if root.generation == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(path, tiny_problem(workers=2, **FINETUNE), "nsga2", callbacks=[stop], **RUN)
    prepare_run(path, config, resume=True)
    problem = tiny_problem(workers=2, backend="ray", **FINETUNE)
    result = run_search(path, problem, "nsga2", resume=True, **RUN)
    assert archive_key(result.archive) == archive_key(one_process.archive)
