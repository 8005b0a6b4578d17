"""Run directories: CSV rows per generation, checkpoints, resume after an interruption."""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest_search import Interrupt, interrupt_after, tiny_problem
from moprune.algorithms import ALGORITHMS
from moprune.exceptions import MopruneError
from moprune.runs import (
    CHECKPOINT,
    CONFIG,
    EVALUATIONS,
    RESULT,
    decode_genome,
    encode_genome,
    load_checkpoint,
    load_result,
    prepare_run,
    read_config,
    read_evaluations,
    run_search,
)

CONFIG_A = {"model": "tiny", "pop_size": 8, "generations": 5, "seed": 3}
RUN = {"pop_size": 8, "n_gen": 5, "seed": 3}


def archive_key(archive):
    """What must be equal between an interrupted-and-resumed run and an uninterrupted one:
    everything but the wall time (``seconds``)."""
    return [(e.plan_key, e.genome.tobytes(), e.accuracy, e.generation, e.objectives, e.macs, e.params,
             e.feasible, e.cached, e.error) for e in archive]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "run"
    prepare_run(path, CONFIG_A)
    result = run_search(path, tiny_problem(), "nsga2", **RUN)
    return path, result


def test_a_run_writes_config_rows_checkpoint_and_result(reference):
    path, result = reference
    assert read_config(path) == CONFIG_A
    df = read_evaluations(path)
    assert len(df) == len(result.archive) == 8 * 5
    assert list(df.index) == list(range(40))
    assert df["generation"].tolist() == [e.generation for e in result.archive]
    assert df["plan_key"].tolist() == [e.plan_key for e in result.archive]
    np.testing.assert_allclose(df["accuracy"], [e.accuracy for e in result.archive])
    assert all(np.array_equal(g, e.genome) for g, e in zip(df["genome"], result.archive))
    state = load_checkpoint(path)
    assert state["generation"] == 4 and len(state["archive"]) == 40
    assert state["csv_size"] == os.path.getsize(path / EVALUATIONS)
    stored = load_result(path)
    assert archive_key(stored.archive) == archive_key(result.archive)
    assert stored.base_accuracy == result.base_accuracy and stored.objectives == ("error", "macs")


def test_the_checkpoint_holds_no_model_nor_data(reference):
    path, _ = reference
    raw = (path / CHECKPOINT).read_bytes()
    assert b"torch" not in raw or len(raw) < 200_000
    state = load_checkpoint(path)
    assert b"Linear" not in state["algorithm"]


@pytest.mark.parametrize("stop_at", [0, 2])
def test_resume_after_an_interruption_gives_the_same_archive_and_rows(tmp_path, reference, stop_at):
    ref_path, ref = reference
    path = tmp_path / "run"
    prepare_run(path, CONFIG_A)
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "nsga2", callbacks=[interrupt_after(stop_at)], **RUN)
    assert not (path / RESULT).exists()
    # the interrupted generation was written to the CSV, not to the checkpoint: add a torn row too
    with open(path / EVALUATIONS, "a") as f:
        f.write("999,3,0.5,0.")
    (path / ".tmp-abcdcheckpoint.pkl").write_bytes(b"half a checkpoint")  # a kill during a write
    prepare_run(path, CONFIG_A, resume=True)
    result = run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    assert archive_key(result.archive) == archive_key(ref.archive)
    assert not (path / ".tmp-abcdcheckpoint.pkl").exists()
    pd.testing.assert_frame_equal(read_evaluations(path).drop(columns=["seconds", "genome"]),
                                  read_evaluations(ref_path).drop(columns=["seconds", "genome"]))


def test_resume_of_a_finished_run_returns_it(reference, tmp_path):
    path, ref = reference
    result = run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    assert archive_key(result.archive) == archive_key(ref.archive)


def test_a_corrupt_checkpoint_is_a_clear_error_and_the_csv_stays(tmp_path):
    path = tmp_path / "run"
    prepare_run(path, CONFIG_A)
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "nsga2", callbacks=[interrupt_after(1)], **RUN)
    before = (path / EVALUATIONS).read_bytes()
    data = (path / CHECKPOINT).read_bytes()
    (path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(MopruneError, match="corrupt or truncated.*evaluations.csv"):
        run_search(path, tiny_problem(), "nsga2", resume=True, **RUN)
    assert (path / EVALUATIONS).read_bytes() == before
    assert len(read_evaluations(path)) == 16
    (path / CHECKPOINT).write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(MopruneError, match="not an authenticated moprune checkpoint"):
        load_checkpoint(path)


def test_prepare_refuses_another_run_unless_forced(tmp_path):
    path = tmp_path / "run"
    assert prepare_run(path, CONFIG_A) == "new"
    with pytest.raises(MopruneError, match=r"different run.*\['seed'\].*--resume.*--force"):
        prepare_run(path, {**CONFIG_A, "seed": 4})
    with pytest.raises(MopruneError, match="this run already"):
        prepare_run(path, CONFIG_A)
    with pytest.raises(MopruneError, match=r"different run.*\['seed'\]"):
        prepare_run(path, {**CONFIG_A, "seed": 4}, resume=True)
    assert prepare_run(path, CONFIG_A, resume=True) == "resume"
    (path / EVALUATIONS).write_text("x\n")
    assert prepare_run(path, {**CONFIG_A, "seed": 4}, force=True) == "new"
    assert json.loads((path / CONFIG).read_text())["seed"] == 4
    assert not (path / EVALUATIONS).exists()
    with pytest.raises(MopruneError, match="no run to resume"):
        prepare_run(tmp_path / "nothing", CONFIG_A, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MopruneError, match="holds no moprune run"):
        prepare_run(tmp_path / "other", CONFIG_A)


def test_genome_strings_round_trip():
    bits = np.array([True, False, True, True])
    assert encode_genome(bits) == "1011"
    assert np.array_equal(decode_genome("1011"), bits)
    ratios = np.array([0.25, 1.0, 1e-7])
    np.testing.assert_array_equal(decode_genome(encode_genome(ratios)), ratios)


def test_an_unfinished_run_has_no_result_unless_partial(tmp_path):
    path = tmp_path / "run"
    prepare_run(path, CONFIG_A)
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "nsga2", callbacks=[interrupt_after(1)], **RUN)
    with pytest.raises(MopruneError, match="has not finished.*--resume"):
        load_result(path)
    assert len(load_result(path, partial=True).archive) == 16


def test_search_calls_its_callbacks_after_each_generation_and_checks_resume():
    from moprune import search
    from moprune.exceptions import MopruneValueError

    calls = []
    problem = tiny_problem()
    search(problem, "nsga2", pop_size=6, n_gen=3, seed=0,
           callbacks=[lambda algo, root: calls.append((root.generation, len(root.archive), algo.n_iter)),
                      lambda algo, root: calls.append("second")])
    # in order, after each generation; pymoo counts n_iter after advancing
    assert calls == [(0, 6, 2), "second", (1, 12, 3), "second", (2, 18, 4), "second"]
    with pytest.raises(MopruneValueError, match=r"callbacks must be a list of callables"):
        search(problem, "nsga2", pop_size=6, n_gen=3, callbacks=lambda algo, root: None)
    with pytest.raises(MopruneValueError, match=r"callbacks\[1\] must be a callable"):
        search(problem, "nsga2", pop_size=6, n_gen=3, callbacks=[print, 5])
    with pytest.raises(MopruneValueError, match="resume"):
        search(problem, "nsga2", pop_size=6, n_gen=3, resume={"algorithm": None, "archive": []})


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_resumes_exactly(tmp_path, name):
    ratio = name == "genecai"  # GeneCAI searches keep ratios
    run = {"pop_size": 6, "n_gen": 4, "seed": 2}
    prepare_run(tmp_path / "ref", {"algorithm": name})
    reference = run_search(tmp_path / "ref", tiny_problem(ratio=ratio), name, **run)
    prepare_run(tmp_path / "cut", {"algorithm": name})
    with pytest.raises(Interrupt):
        run_search(tmp_path / "cut", tiny_problem(ratio=ratio), name, callbacks=[interrupt_after(1)], **run)
    resumed = run_search(tmp_path / "cut", tiny_problem(ratio=ratio), name, resume=True, **run)
    assert len(reference.archive) > 12
    assert archive_key(resumed.archive) == archive_key(reference.archive)


def test_a_focused_run_keeps_its_screened_candidates_through_a_resume(tmp_path):
    run = {"pop_size": 10, "n_gen": 6, "seed": 2}
    config = {"model": "tiny", "pop_size": 10, "generations": 6, "seed": 2}
    ref_path, path = tmp_path / "ref", tmp_path / "run"
    prepare_run(ref_path, config)
    ref = run_search(ref_path, tiny_problem(), "focused", **run)
    assert sum(e.screened for e in ref.archive) >= 3
    prepare_run(path, config)
    with pytest.raises(Interrupt):
        run_search(path, tiny_problem(), "focused", callbacks=[interrupt_after(2)], **run)
    prepare_run(path, config, resume=True)
    result = run_search(path, tiny_problem(), "focused", resume=True, **run)
    key = [k + (e.screened,) for k, e in zip(archive_key(ref.archive), ref.archive)]
    assert [k + (e.screened,) for k, e in zip(archive_key(result.archive), result.archive)] == key
    assert read_evaluations(path)["screened"].tolist() == [e.screened for e in ref.archive]
    stored = load_result(path)
    assert [e.screened for e in stored.archive] == [e.screened for e in ref.archive]
    from moprune.runs.evaluations import records_from_frame

    records = {r.plan_key: r for r in records_from_frame(read_evaluations(path))}
    assert {k: r.screened for k, r in records.items()} == {e.plan_key: e.screened for e in ref.archive if not e.cached}
