#!/usr/bin/env python
"""Data-parallel benchmark: the step and the gradient all-reduce on 1 and 2 MPI ranks (more where
the machine has the cores), and a model of the all-reduce's share of a step at 8, 64 and 512.

Measured, on MNIST, with ``mpiexec -n R`` (the venv's, from ``dnn-framework[mpi]``) and the BLAS
threads dnn gives each rank (the cores divided by the ranks), in rounds that alternate the
numbers of ranks (a shared machine's noise then hits them alike; the figures are the medians
over the rounds), for the seed network (784-512-10, RMSprop) and a 10x wider one
(784-5120-10):

  step     seconds per training step (``Sequential.fit``'s epoch of :data:`STEPS` steps over
           them, the slowest rank's), at a global batch of 128 and at 128 rows per rank,
  all-reduce  seconds per sum of the network's gradients (one flat float32 buffer, the
           communicator's ``all_reduce``), and of 8 bytes (the latency),
  copies   seconds per step of what the sum adds around the all-reduce: the gradients copied
           into the flat buffer, weighted, and copied back (``GradientSum`` of one rank),

then models the ring all-reduce of N ranks, ``2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) *
latency``, with the bandwidth and latency measured on 2 ranks, against the 1-rank step at 128
rows (every rank 128 rows, the global batch 128 N): the share of a step spent summing, the sum
not overlapping the backward pass.  Over this machine's loopback the bandwidth is memory's, not a
network's: the model says what a network as fast would give.  No GPU figure is measured here.

    python scripts/bench_distributed.py --data-dir MNIST_DIR [--rounds 5] [--json out.json]

``--quick`` checks that the script works, in seconds: one round on the first 512 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import dnn
from bench import (BATCH, CLASSES, QUICK_ROWS, add_quick_option, load_mnist, machine_line,
                   write_json)
from dnn import distributed
from dnn.distributed.launcher import mpiexec
from dnn.distributed import SingleProcess
from dnn.layers import Dense
from dnn.trainers.data_parallel import GradientSum
from dnn.utils import to_categorical

NETWORKS = {"seed": 512, "wide": 5120}  # hidden units
MODELLED_RANKS = (8, 64, 512)
STEPS = 50  # per timed epoch
LATENCY_BYTES = 8


def network(hidden: int):
    """784-hidden-10, relu then softmax, RMSprop, built."""
    model = dnn.Sequential([Dense(hidden, activation="relu"),
                            Dense(CLASSES, activation="softmax")], seed=0)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    model.build(784)
    return model


def step_seconds(model, x, y, batch: int) -> float:
    """An epoch's seconds over its :data:`STEPS` steps of ``batch`` rows (after one to warm
    up), the slowest rank's."""
    x, y = x[:STEPS * batch], y[:STEPS * batch]
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds = model.fit(x, y, batch_size=batch, epochs=1, verbose=0).seconds[0]
    return max(distributed.communicator().gather_objects(seconds / -(-len(x) // batch)))


def all_reduce_seconds(elements: int, repeats: int) -> float:
    """The median seconds of summing ``elements`` float32 over the ranks, the slowest
    rank's."""
    ranks = distributed.communicator()
    buffer = np.ones(elements, np.float32)
    backend = dnn.get_backend("cpu")
    seconds = []
    for _ in range(repeats + 1):  # the first warms the transport up
        ranks.all(True)  # start together
        started = time.perf_counter()
        ranks.all_reduce(buffer, backend)
        seconds.append(time.perf_counter() - started)
    return max(ranks.gather_objects(statistics.median(seconds[1:])))


def copies_seconds(model, repeats: int) -> float:
    """The median seconds of :class:`GradientSum` on ``model``'s gradients without the
    all-reduce (a single process's): the copies and the weighting, the slowest rank's."""
    grads = [grad for layer in model.layers for grad in layer.grads]
    gradient_sum = GradientSum(grads, model.backend, SingleProcess())
    seconds = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        gradient_sum(BATCH // 2, BATCH)
        seconds.append(time.perf_counter() - started)
    return max(distributed.communicator().gather_objects(statistics.median(seconds[1:])))


def worker(args) -> None:
    """One rank's measurements; rank 0 writes them to ``args.out``."""
    ranks = distributed.communicator()
    (x, labels), _ = load_mnist(args.data_dir, QUICK_ROWS if args.quick else None)
    y = to_categorical(labels, CLASSES)
    result = {"ranks": ranks.size}
    for name, hidden in NETWORKS.items():
        model = network(hidden)
        figures = {"parameters": model.count_params(),
                   "step_s": step_seconds(model, x, y, BATCH),
                   "step_128_per_rank_s": step_seconds(model, x, y, BATCH * ranks.size),
                   "copies_s": copies_seconds(model, 5 if args.quick else 30)}
        if ranks.size > 1:
            figures["all_reduce_s"] = all_reduce_seconds(model.count_params(),
                                                         5 if args.quick else 30)
        result[name] = figures
    if ranks.size > 1:
        result["latency_all_reduce_s"] = all_reduce_seconds(LATENCY_BYTES // 4, 200)
    if ranks.rank == 0:
        with open(args.out, "w") as file:
            json.dump(result, file)


def measure(ranks: int, args) -> dict:
    """:func:`worker`'s figures on ``ranks`` processes of this machine."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        command = [mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", "--out",
                   out] + (["--quick"] if args.quick else []) + (
            ["--data-dir", args.data_dir] if args.data_dir else [])
        subprocess.run(command, check=True, timeout=1800)
        with open(out) as file:
            return json.load(file)


def medians(rounds: list):
    """``rounds`` (the same dict of figures, once per round) as one, each figure the median of
    its rounds'."""
    first = rounds[0]
    if isinstance(first, dict):
        return {key: medians([figures[key] for figures in rounds]) for key in first}
    return statistics.median(rounds) if isinstance(first, float) else first


def modelled(two_ranks: dict, one_rank: dict) -> dict:
    """The ring all-reduce's seconds and share of a step at :data:`MODELLED_RANKS`, from the
    2-rank bandwidth (of the wide network's sum) and latency, against 1-rank steps of 128
    rows."""
    latency = two_ranks["latency_all_reduce_s"] / 2  # a 2-rank ring: 2 (N - 1) = 2 steps
    wide_bytes = 4 * two_ranks["wide"]["parameters"]
    bandwidth = wide_bytes / max(two_ranks["wide"]["all_reduce_s"] - 2 * latency, 1e-9)
    model = {"bandwidth_bytes_per_s": bandwidth, "latency_s": latency, "ranks": {}}
    for ranks in MODELLED_RANKS:
        row = model["ranks"][ranks] = {}
        for name in NETWORKS:
            seconds = (2 * (ranks - 1) / ranks * 4 * two_ranks[name]["parameters"] / bandwidth
                       + 2 * (ranks - 1) * latency)
            step = one_rank[name]["step_s"]
            row[name] = {"all_reduce_s": seconds, "share_of_step": seconds / (step + seconds)}
    return model


def print_result(result: dict) -> None:
    print(machine_line())
    runs = result["runs"]
    for name, hidden in NETWORKS.items():
        parameters = runs[0][name]["parameters"]
        print(f"{name} network 784-{hidden}-10 ({parameters:,} parameters, "
              f"{4 * parameters / 1e6:.1f} MB of float32 gradients):")
        for run in runs:
            figures, ranks = run[name], run["ranks"]
            print(f"  {ranks} rank{'s' if ranks > 1 else ' '}: step {1e3 * figures['step_s']:.2f}"
                  f" ms at batch {BATCH}, {1e3 * figures['step_128_per_rank_s']:.2f} ms at "
                  f"{BATCH} rows per rank; copies {1e3 * figures['copies_s']:.2f} ms"
                  + (f", all-reduce {1e3 * figures['all_reduce_s']:.2f} ms"
                     if "all_reduce_s" in figures else ""))
    model = result["model"]
    print(f"all-reduce on 2 ranks: {model['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s, latency "
          f"{1e6 * model['latency_s']:.1f} us")
    print(f"model, {BATCH} rows per rank (ring all-reduce at that bandwidth and latency):")
    for ranks, row in model["ranks"].items():
        print(f"  {ranks:>4} ranks: " + ", ".join(
            f"{name} all-reduce {1e3 * cell['all_reduce_s']:.2f} ms = "
            f"{100 * cell['share_of_step']:.0f}% of a step" for name, cell in row.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # a paragraph
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"),
                        help="the MNIST folder (default: $DNN_DATA_DIR)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds, each timing every number of ranks; the figures are "
                             "the medians over them (default: 5)")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="also write the figures to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    add_quick_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if args.worker:
        worker(args)
        return
    counts = [1, 2] + [4] * ((os.cpu_count() or 1) >= 8)
    rounds = [[measure(ranks, args) for ranks in counts] for _ in range(args.rounds)]
    runs = [medians([run[index] for run in rounds]) for index in range(len(counts))]
    result = {"quick": args.quick, "rounds": args.rounds, "machine": machine_line(),
              "runs": runs, "model": modelled(runs[1], runs[0])}
    print_result(result)
    if args.json_path:
        write_json(args.json_path, result)


if __name__ == "__main__":
    main()
