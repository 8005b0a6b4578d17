"""Candidates per second with worker processes, and resident memory over a long search (issue 15).

Part ``speed``: one fixed population of ``mnist_cnn`` channel candidates (uniform keep ratios
drawn in [0.1, 1], the cache off so every candidate runs) measured on 2,000 validation images
(batch 250) by: 1 process x 1 torch thread, 1 process x 2 threads (torch's default on a 2-core
machine), 2 worker processes x 1 thread, and 2 Ray actors x 1 thread (``backend="ray"``, a local
Ray instance started by the evaluator; left out where Ray is not installed). The configurations
are interleaved over several rounds and the median of each is kept; the pools' start-up is left
out (it happens once per search). The records of every configuration must be identical. Targets
on 2 cores: 2 x 1 at least 1.7x of 1 x 1 and at least 1.3x of 1 x 2; Ray within 15% of the local
workers. While the Ray instance is up (all rounds), its own processes (GCS, raylet) run beside
every configuration.

Part ``memory``: resident memory (``VmRSS``) of the searching process, and of each worker, after
every generation of a 60-generation default search (population 20, 200 validation images), with
and without ``malloc_trim``; growth between generation 10 and 60. Target: under 5%.

Timing needs an otherwise idle machine: Linux shares the CPU between sessions (autogroups)
before it shares it between processes, so while jobs of other sessions keep the cores busy, a
search's extra worker processes get no extra CPU time. The CPU time per candidate printed beside
each rate (all processes of the configuration together) is what such contention leaves unchanged.

Run: ``.venv/bin/python benchmarks/bench_workers.py [--part speed|memory|all]``; the output is
written to ``benchmarks/results/bench_workers[_PART].txt``.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def proc_kib(pid, field):
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pids):
    """User + system CPU seconds of this process and of processes ``pids`` so far."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def setup(n_samples):
    import moprune
    from moprune.data import load_mnist

    splits = load_mnist()
    model = moprune.pretrained("mnist_cnn", data=splits, progress=False)
    space = moprune.ChannelSpace(model, encoding="binary")
    return splits, model, space


def speed(rounds, n_candidates):
    from moprune.evaluation import Evaluator
    from moprune.evaluation.ray_pool import ray_installed

    splits, model, space = setup(2000)
    rng = np.random.default_rng(0)
    X = space.genomes_from_ratios(rng.uniform(0.1, 1.0, size=(n_candidates, len(space.group_names))))
    configs = {
        "1 process x 1 thread": {"num_threads": 1},
        "1 process x 2 threads": {"num_threads": 2},
        "2 workers x 1 thread": {"num_threads": 1, "workers": 2},
    }
    ray = "2 Ray actors x 1 thread"
    if ray_installed():
        configs[ray] = {"num_threads": 1, "workers": 2, "backend": "ray"}
    evaluators = {name: Evaluator(splits.val, n_samples=2000, batch_size=250, cache=False, device="cpu", **kw)
                  for name, kw in configs.items()}
    times = {name: [] for name in configs}
    cpu = {name: [] for name in configs}
    loads = []
    records = {}
    startup = {}
    for name, ev in evaluators.items():  # warm-up: start the pool, first allocations
        ev.__enter__()
        t0 = time.perf_counter()
        ev.evaluate(space, X[:2])
        startup[name] = time.perf_counter() - t0
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, ev in evaluators.items():
            c0, t0 = cpu_seconds(ev.worker_pids), time.perf_counter()
            out = ev.evaluate(space, X)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds(ev.worker_pids) - c0)
            records.setdefault(name, [(o.plan_key, o.accuracy) for o in out])
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {len(X) / times[n][-1]:.1f}/s" for n in configs),
              flush=True)
    worker_peaks = [proc_kib(pid, "VmHWM") / 1024 for pid in evaluators["2 workers x 1 thread"].worker_pids]
    actor_peaks = [proc_kib(pid, "VmHWM") / 1024 for pid in evaluators[ray].worker_pids] if ray in configs else []
    for ev in evaluators.values():
        ev.__exit__(None, None, None)
    again = Evaluator(splits.val, n_samples=2000, batch_size=250, cache=False, device="cpu", num_threads=1, workers=2)
    t0 = time.perf_counter()
    again.evaluate(space, X[:2])
    restart = time.perf_counter() - t0
    again.close()
    rate = {n: len(X) / statistics.median(t) for n, t in times.items()}
    base, two = rate["1 process x 1 thread"], rate["1 process x 2 threads"]
    lines = [f"speed: {len(X)} mnist_cnn channel candidates, 2,000 validation images, batch 250, "
             f"median of {rounds} interleaved rounds (pool start-up excluded); 1-minute load average at the "
             f"rounds' starts: {', '.join(f'{v:.1f}' for v in loads)}"]
    for name in configs:
        per = statistics.median(cpu[name]) / len(X)
        lines.append(f"  {name:24s} {rate[name]:6.2f} candidates/s   x{rate[name] / base:.2f} of 1x1   "
                     f"x{rate[name] / two:.2f} of 1x2   CPU {1000 * per:.0f} ms per candidate (searching process "
                     f"and workers{'; not Ray' + chr(39) + 's own processes' if name == ray else ''})")
    same = all(records[n] == records["1 process x 1 thread"] for n in configs)
    lines.append(f"  start-up: the first pool of 2 workers and its first 2 candidates {startup['2 workers x 1 thread']:.2f} s "
                 f"(the fork server imports torch), a later pool {restart:.2f} s; in one process the first 2 "
                 f"candidates {startup['1 process x 1 thread']:.2f} s"
                 + (f"; 2 Ray actors and their first 2 candidates {startup[ray]:.2f} s (starting the local Ray "
                    "instance included)" if ray in configs else ""))
    lines.append(f"  records identical across configurations: {same}")
    lines.append(f"  peak resident memory per worker (VmHWM): {', '.join(f'{m:.0f} MiB' for m in worker_peaks)}; "
                 f"searching process: {proc_kib(os.getpid(), 'VmHWM') / 1024:.0f} MiB"
                 + (f"; per Ray actor: {', '.join(f'{m:.0f} MiB' for m in actor_peaks)}" if actor_peaks else ""))
    ratio = rate["2 workers x 1 thread"]
    lines.append(f"  targets: 2x1 >= 1.7x of 1x1 ({ratio / base:.2f}: {'met' if ratio / base >= 1.7 else 'NOT met'}), "
                 f">= 1.3x of 1x2 ({ratio / two:.2f}: {'met' if ratio / two >= 1.3 else 'NOT met'})"
                 + (f", Ray within 15% of 2 local workers ({rate[ray] / ratio:.2f}: "
                    f"{'met' if rate[ray] / ratio >= 0.85 else 'NOT met'})" if ray in configs else
                    "; Ray not installed: its row left out"))
    return lines


def memory_run(workers, n_gen):
    """One search in this process; prints one line per generation: gen, main RSS, worker RSS (MiB)."""
    import moprune
    from moprune.evaluation import Evaluator

    splits, model, space = setup(200)
    evaluator = Evaluator(splits.val, n_samples=200, batch_size=250, num_threads=1, device="cpu", workers=workers)
    problem = moprune.PruningProblem(space, evaluator)

    def report(algorithm, root):
        rss = [proc_kib(os.getpid(), "VmRSS") / 1024] + [proc_kib(p, "VmRSS") / 1024
                                                         for p in root.evaluator.worker_pids]
        print("gen", root.generation, " ".join(f"{m:.1f}" for m in rss), flush=True)

    moprune.search(problem, "focused", pop_size=20, n_gen=n_gen, seed=0, callbacks=[report])


def memory(n_gen):
    lines = [f"memory: resident memory (VmRSS, MiB) of a {n_gen}-generation default search, population 20, "
             "200 validation images; growth from generation 10 to the last"]
    for workers in (None, 2):
        for trim in ("1", "0"):
            env = {**os.environ, "MOPRUNE_MALLOC_TRIM": trim}
            cmd = [sys.executable, os.path.abspath(__file__), "--part", "memory-run", "--generations", str(n_gen)]
            if workers:
                cmd += ["--workers", str(workers)]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rows = {int(line.split()[1]): [float(v) for v in line.split()[2:]]
                    for line in out.splitlines() if line.startswith("gen ")}
            first, last = rows[10], rows[max(rows)]
            label = f"{'in one process' if workers is None else f'{workers} workers':14s} malloc_trim {'on ' if trim == '1' else 'off'}"
            parts = [f"searching process {first[0]:.0f} -> {last[0]:.0f} ({100 * (last[0] / first[0] - 1):+.1f}%)"]
            for i in range(1, len(first)):
                parts.append(f"worker {i} {first[i]:.0f} -> {last[i]:.0f} ({100 * (last[i] / first[i] - 1):+.1f}%)")
            lines.append(f"  {label}: " + "; ".join(parts) + f"  [{time.perf_counter() - t0:.0f} s]")
            print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "memory", "all", "memory-run"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--generations", type=int, default=60)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if args.part == "memory-run":
        memory_run(args.workers, args.generations)
        return
    header = [f"bench_workers on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, Python {platform.python_version()}; "
              f"load average before: {os.getloadavg()[0]:.2f}",
              f"command: .venv/bin/python benchmarks/bench_workers.py --part {args.part} --rounds {args.rounds} "
              f"--candidates {args.candidates} --generations {args.generations}"]
    print("\n".join(header), flush=True)
    lines = header
    if args.part in ("speed", "all"):
        out = speed(args.rounds, args.candidates)
        print("\n".join(out), flush=True)
        lines += out
    if args.part in ("memory", "all"):
        lines += memory(args.generations)
    lines.append(f"load average after: {os.getloadavg()[0]:.2f}")
    print(lines[-1])
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = "bench_workers.txt" if args.part == "all" else f"bench_workers_{args.part}.txt"
    with open(os.path.join(HERE, "results", name), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
