"""Run directories you can trust: reading a run unpickles nothing, the resume checkpoint is
authenticated, one process writes a run, and a run that fails before its first checkpoint
leaves nothing behind. The concurrency tests use real processes."""

import hashlib
import hmac
import multiprocessing
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest_search import Interrupt, interrupt_after, tiny_problem
from moprune.exceptions import MopruneError, MopruneValueError
from moprune.runs import (
    CHECKPOINT,
    CONFIG,
    EVALUATIONS,
    GENOMES,
    LOCK,
    PREVIOUS_EVALUATIONS,
    PROGRESS,
    RESULT,
    CheckpointError,
    RunLockedError,
    checkpoint_key,
    key_path,
    load_result,
    lock_holder,
    prepare_run,
    read_evaluations,
    run_search,
)
from moprune.runs.checkpoint import MAGIC

CONFIG_A = {"model": "tiny", "seed": 3}
RUN = {"pop_size": 6, "n_gen": 4, "seed": 3}
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own ``$MOPRUNE_CACHE``, hence its own checkpoint key."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MOPRUNE_CACHE", str(cache))
    return cache


class Evil:
    """Unpickling this creates a file: the proof that code from a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def archive_key(archive, *, with_cache=True):
    return [(e.plan_key, e.genome.tobytes(), e.genome.dtype.str, e.accuracy, e.generation, e.objectives, e.macs,
             e.params, e.macs_ratio, e.params_ratio, e.sparsity, e.feasible, e.error, e.summary)
            + ((e.cached, e.seconds) if with_cache else ()) for e in archive]


def finished_run(path, *, ratio=False, algorithm="nsga2"):
    prepare_run(path, {**CONFIG_A, "algorithm": algorithm})
    return run_search(path, tiny_problem(ratio=ratio), algorithm, **RUN)


def interrupted_run(path, generation=1):
    prepare_run(path, CONFIG_A)
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "nsga2", callbacks=[interrupt_after(generation)], **RUN)


def disable_pickle(monkeypatch):
    """Make every way of unpickling through the pickle module fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


# ----------------------------------------------------------------------------- data-only results
@pytest.mark.parametrize("ratio, algorithm", [(False, "nsga2"), (True, "genecai")])
def test_a_finished_run_reads_back_exactly_without_unpickling(tmp_path, ratio, algorithm, monkeypatch):
    path = tmp_path / "run"
    result = finished_run(path, ratio=ratio, algorithm=algorithm)
    assert {CONFIG, EVALUATIONS, CHECKPOINT, PROGRESS, GENOMES, RESULT} <= set(os.listdir(path))

    disable_pickle(monkeypatch)
    stored = load_result(path)
    assert archive_key(stored.archive) == archive_key(result.archive)  # exact, seconds and summaries included
    assert stored.meta() == result.meta() and stored.pymoo_result is None
    assert len(stored.archive) >= 24 and stored.archive[0].genome.dtype == (float if ratio else bool)
    partial = load_result(path, partial=True)  # a finished run reads the same either way
    assert archive_key(partial.archive) == archive_key(result.archive)


def test_an_edited_result_file_is_noticed(tmp_path):
    path = tmp_path / "run"
    finished_run(path)
    text = (path / EVALUATIONS).read_text()
    (path / EVALUATIONS).write_text(text.replace(",False,", ",True,", 1))
    with pytest.raises(MopruneError, match="evaluations.csv was changed after the run finished"):
        load_result(path)


def test_reading_a_run_never_unpickles_a_crafted_file(tmp_path, monkeypatch):
    """A run directory from someone else may hold crafted pickles: reading it runs none of them.
    With the pickle module disabled on top, every read still works: only data files are read."""
    marker = tmp_path / "pwned"
    path = tmp_path / "run"
    result = finished_run(path)
    evil = pickle.dumps(Evil(marker))
    (path / CHECKPOINT).write_bytes(evil)
    (path / "result.pkl").write_bytes(evil)

    disable_pickle(monkeypatch)
    assert archive_key(load_result(path).archive) == archive_key(result.archive)
    os.remove(path / RESULT)  # unfinished now: progress.json and the CSV are read
    assert archive_key(load_result(path, partial=True).archive) == archive_key(result.archive)
    with pytest.raises(MopruneError, match="older moprune.*result.pkl.*no longer reads"):
        load_result(path)
    os.remove(path / PROGRESS)
    with pytest.raises(MopruneError, match="older moprune.*result.pkl.*no longer reads"):
        load_result(path, partial=True)
    assert len(read_evaluations(path)) == 24
    assert not marker.exists()


# ----------------------------------------------------------------------------- the authenticated checkpoint
def test_resume_refuses_a_crafted_checkpoint_before_unpickling_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "run"
    interrupted_run(path)
    csv = (path / EVALUATIONS).read_bytes()
    payload = pickle.dumps(Evil(marker))
    # 1. a plain pickle (e.g. a checkpoint of moprune < 0.2, or any crafted file)
    (path / CHECKPOINT).write_bytes(payload)
    with pytest.raises(CheckpointError, match="not an authenticated moprune checkpoint.*not unpickled.*"
                                              "--restart-from-csv"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    # 2. the right header, signed with some other key
    other = hmac.new(b"k" * 32, payload, hashlib.sha256).hexdigest().encode()
    (path / CHECKPOINT).write_bytes(MAGIC + other + b"\n" + payload)
    with pytest.raises(CheckpointError, match="HMAC does not match"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    assert not marker.exists()
    assert (path / EVALUATIONS).read_bytes() == csv  # the CSV was not touched


def test_a_checkpoint_made_under_another_key_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "run"
    interrupted_run(path)  # signed with this test's key
    monkeypatch.setenv("MOPRUNE_CACHE", str(tmp_path / "someone-else"))
    with pytest.raises(CheckpointError, match=r"no checkpoint key .* another user or machine"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    checkpoint_key()  # someone else's key now exists, and differs
    with pytest.raises(CheckpointError, match="HMAC does not match"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    monkeypatch.setenv("MOPRUNE_CACHE", str(tmp_path / "cache"))  # back to the user who made it
    result = run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    assert len(result.archive) == 24


def test_the_key_is_private_made_once_and_checked(private_cache):
    key = checkpoint_key()
    assert key_path() == str(private_cache / "checkpoint.key")
    assert len(key) == 32 and checkpoint_key() == key
    assert stat.S_IMODE(os.stat(key_path()).st_mode) == 0o600
    os.chmod(key_path(), 0o644)
    with pytest.raises(MopruneError, match=r"can be read by others \(mode 0644\).*chmod 600"):
        checkpoint_key()
    os.chmod(key_path(), 0o600)
    with open(key_path(), "w") as f:
        f.write("not hex\n")
    with pytest.raises(MopruneError, match="damaged"):
        checkpoint_key()


@pytest.mark.slow
def test_two_processes_making_the_key_agree_on_one(private_cache):
    code = "from moprune.runs import checkpoint_key; print(checkpoint_key().hex())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    keys = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(keys) == 1 and bytes.fromhex(keys.pop()) == checkpoint_key()


# ----------------------------------------------------------------------------- restart from the CSV
def test_restart_from_csv_reuses_the_accuracies_and_keeps_the_rows(tmp_path):
    ref = finished_run(tmp_path / "ref")
    path = tmp_path / "cut"
    interrupted_run(path, generation=1)
    old_rows = (path / EVALUATIONS).read_bytes()
    (path / CHECKPOINT).write_bytes(b"garbage")
    problem = tiny_problem()
    result = run_search(path, problem, "nsga2", restart=True, **RUN)
    assert archive_key(result.archive, with_cache=False) == archive_key(ref.archive, with_cache=False)
    assert (path / PREVIOUS_EVALUATIONS).read_bytes() == old_rows
    measured = {e.plan_key for e in ref.archive[:12]}
    assert all(e.cached for e in result.archive[:12])  # generations 0 and 1 came from the old rows
    newly = {e.plan_key for e in ref.archive[12:] if not e.cached} - measured
    assert problem.evaluator.n_evaluated == len(newly)  # only candidates the old rows did not hold were run
    assert problem.evaluator.n_evaluated + len(measured) == sum(not e.cached for e in ref.archive)
    assert archive_key(load_result(path).archive) == archive_key(result.archive)


def test_a_second_restart_keeps_the_rows_of_both(tmp_path):
    ref = finished_run(tmp_path / "ref")
    path = tmp_path / "cut"
    interrupted_run(path, generation=1)
    first = read_evaluations(path, decode=False)
    (path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "nsga2", restart=True, callbacks=[interrupt_after(2)], **RUN)
    second = read_evaluations(path, decode=False)
    (path / CHECKPOINT).write_bytes(b"garbage")
    problem = tiny_problem()
    result = run_search(path, problem, "nsga2", restart=True, **RUN)
    kept = read_evaluations(path, file=PREVIOUS_EVALUATIONS, decode=False)
    assert len(kept) == len(first) + len(second) == 12 + 18
    assert set(kept["plan_key"]) == set(first["plan_key"]) | set(second["plan_key"])
    assert archive_key(result.archive, with_cache=False) == archive_key(ref.archive, with_cache=False)
    assert all(e.cached for e in result.archive[:18])


def test_restart_needs_rows(tmp_path):
    path = tmp_path / "run"
    prepare_run(path, CONFIG_A)
    with pytest.raises(MopruneError, match="nothing to restart from"):
        run_search(path, tiny_problem(), "nsga2", restart=True, **RUN)


# ----------------------------------------------------------------------------- clean-up of a failed start
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    path = tmp_path / "new"
    assert prepare_run(path, CONFIG_A) == "new"
    with pytest.raises(MopruneValueError, match="pop_size must be an int >= 2; got 1"):
        run_search(path, tiny_problem(), "nsga2", pop_size=1, n_gen=2)
    assert not path.exists()  # it made the folder, so the folder went too
    assert prepare_run(path, CONFIG_A) == "new"  # the same command can simply be run again
    with pytest.raises(TypeError, match=r"algorithm 'nsga2' has no option\(s\) \['bogus'\]; its options are: "):
        run_search(path, tiny_problem(), "nsga2", options={"bogus": 1}, **RUN)
    existing = tmp_path / "mine"
    existing.mkdir()
    prepare_run(existing, CONFIG_A)
    problem = tiny_problem()

    def ctrl_c(genome):  # Ctrl-C in the middle of generation 0
        raise KeyboardInterrupt

    problem.space.decode = ctrl_c
    with pytest.raises(KeyboardInterrupt):
        run_search(existing, problem, "nsga2", **RUN)
    assert existing.exists() and os.listdir(existing) == []  # a folder it did not make stays, emptied


def test_a_failure_after_the_first_checkpoint_keeps_the_run(tmp_path):
    path = tmp_path / "run"
    interrupted_run(path, generation=0)
    assert {CONFIG, EVALUATIONS, CHECKPOINT, PROGRESS} <= set(os.listdir(path))
    assert lock_holder(path) is None


# ----------------------------------------------------------------------------- one writer per run
HOLDER = textwrap.dedent("""
    import sys, time
    from moprune.runs import prepare_run
    prepare_run(sys.argv[1], {"model": "tiny", "seed": int(sys.argv[2])})
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A real process that prepared ``tmp_path/run`` (seed 1) and holds its lock."""
    path = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "1"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": TESTS})
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield path, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
def test_another_process_holding_the_lock_blocks_every_writer_and_is_named(holder):
    path, proc = holder
    before = (path / CONFIG).read_bytes()
    assert lock_holder(path) == proc.pid
    assert (path / LOCK).read_text().strip() == str(proc.pid)
    with pytest.raises(RunLockedError, match=rf"refusing --force: another process \(PID {proc.pid}\) is running "):
        prepare_run(path, {**CONFIG_A, "seed": 2}, force=True)
    with pytest.raises(RunLockedError, match=rf"cannot resume: another process \(PID {proc.pid}\)"):
        prepare_run(path, {"model": "tiny", "seed": 1}, resume=True)
    with pytest.raises(RunLockedError, match=rf"PID {proc.pid}"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    with pytest.raises(MopruneError, match=rf"still running \(PID {proc.pid}\).*moprune report --partial"):
        load_result(path)
    assert (path / CONFIG).read_bytes() == before and sorted(os.listdir(path)) == [LOCK, CONFIG]
    proc.kill()  # the OS frees the lock of a killed process: the run can be taken over
    proc.wait()
    assert lock_holder(path) is None
    assert prepare_run(path, {**CONFIG_A, "seed": 2}, force=True) == "new"


def _race_worker(out_root, rounds, index, barrier, queue):
    sys.path.insert(0, TESTS)
    from conftest_search import tiny_problem
    from moprune.exceptions import MopruneError
    from moprune.runs import prepare_run, run_search

    for r in range(rounds):
        problem = tiny_problem()
        out = os.path.join(out_root, f"round{r}")
        barrier.wait(timeout=120)
        try:
            prepare_run(out, {"model": "tiny", "seed": index})
            run_search(out, problem, "random", pop_size=4, n_gen=2, seed=index)
            queue.put((r, index, os.getpid(), "ok"))
        except MopruneError as exc:
            queue.put((r, index, os.getpid(), str(exc)))


@pytest.mark.slow
def test_searches_started_at_the_same_moment_into_one_folder_do_not_mix(tmp_path):
    workers, rounds = 3, 4
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path), rounds, i, barrier, queue))
             for i in range(workers)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=300) for _ in range(workers * rounds)]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    for r in range(rounds):
        mine = [o for o in outcomes if o[0] == r]
        winners = [o for o in mine if o[3] == "ok"]
        assert len(winners) == 1, mine
        _, seed, _, _ = winners[0]
        pids = {o[2] for o in mine}
        for _, _, pid, message in mine:
            if message != "ok":  # locked out (naming a process of the race) or came after the winner finished
                named = [p for p in pids - {pid} if f"another process (PID {p})" in message]
                assert named or "holds a different run" in message, mine
        out = tmp_path / f"round{r}"
        config = (out / CONFIG).read_text()
        assert f'"seed": {seed}' in config
        assert load_result(out).seed == seed
        df = pd.read_csv(out / EVALUATIONS)
        assert len(df) == 8 and set(df["seed"]) == {seed}
        assert (out / EVALUATIONS).read_text().count("generation") == 1  # one header


def test_lock_holder_is_none_for_a_run_of_this_process_or_nobody(tmp_path):
    path = tmp_path / "run"
    prepare_run(path, CONFIG_A)
    assert lock_holder(path) is None  # held here: not "another process"
    run_search(path, tiny_problem(), "nsga2", **RUN)
    assert lock_holder(path) is None and np.isfinite(load_result(path).base_accuracy)


def test_an_existing_file_is_not_a_run_directory(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(MopruneValueError, match=r"run directory must be a folder .*file \(an existing file\)"):
        prepare_run(file, CONFIG_A)


@pytest.mark.slow
def test_sigkill_frees_the_lock(tmp_path):
    path = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "1"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert lock_holder(path) is None
    assert prepare_run(path, {"model": "tiny", "seed": 1}, resume=True) == "resume"
