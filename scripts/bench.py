#!/usr/bin/env python
"""CPU benchmark of the seed network (784-512-10, RMSprop, batch 128) on MNIST.

In one run, on the same data and batch order, it times per epoch:
  dnn    the cpu backend's training epoch (``Sequential.fit``),
  dnn-numpy  the same with the C extension's fused kernels turned off (NumPy ufuncs only),
  floor  exactly the matrix products one epoch needs (forward, weight gradients, hidden-layer
         input gradient), with the same shapes and dtype, through NumPy's BLAS,
  floor+update  the same products with the kernels updated in place after each step (one fused
         RMSprop pass each): the least any training epoch does, since products on weights
         that just changed run slower than on the floor's never-changing ones,
  floor-nonzero  the floor's products with the first layer's two over the batch's non-zero
         columns only, the shapes the cpu backend multiplies (it leaves out the pixels that
         are zero in the whole batch): the floor of dnn's own products,
  torch  PyTorch CPU running the same model, loss, optimizer and batch order (when installed),
interleaved round by round so that machine noise hits them all alike, and reports medians,
spreads and the per-round ratios of dnn to each of the others, over all rounds and over the quiet
ones: those in which a probe found the cores handing cache lines to each other quickly (the
2-core VM of docs/benchmarks.md drifts in and out of a state where they do not, which slows
dnn more than the floor).  It also measures the peak RSS of a one-epoch ``dnn train`` process
on MNIST.

    python scripts/bench.py --data-dir MNIST_DIR [--rounds 5] [--json out.json]

``--quick`` checks that the script works, in seconds: one round on the first 512 training
images, and the RSS of a ``dnn train`` of no epochs (its figures measure nothing worth quoting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import dnn
from dnn.backends.cpu import C_KERNELS, CpuBackend
from dnn.datasets import get
from dnn.distributed.threads import process_threads
from dnn.errors import DataError
from dnn.layers import Dense
from dnn.utils import to_categorical

BATCH, HIDDEN, CLASSES = 128, 512, 10
QUICK_ROWS = 512  # training images in --quick mode, here and in the other benchmark scripts
# A round whose cross-core penalty (make_cross_core_probe) stays below this ran in the machine's
# quiet state: 0.9-1.6 there, 4-9 in the slow state of the 2-core VM of docs/benchmarks.md.
QUIET_PENALTY = 2.0


def write_json(path, result: dict) -> None:
    """``result`` as indented JSON in the file ``path`` (the ``--json`` of every benchmark)."""
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def add_quick_option(parser) -> None:
    """The ``--quick`` flag every script in scripts/ takes (see their docstrings)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"one round on the first {QUICK_ROWS} images: checks the script "
                             "works, in seconds")


def load_mnist(data_dir, rows=None):
    """``(x, labels), (x_test, test_labels)`` of MNIST, images flattened to ``(N, 784)``; only
    the first ``rows`` of each split when given.  MNIST not found ends the script with the
    reason."""
    try:
        splits = get("mnist").load(data_dir)
    except DataError as error:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {error}") from None
    return tuple((images[:rows].reshape(len(images[:rows]), -1), labels[:rows])
                 for images, labels in splits)


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` gives it (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine: CPU model, core count, Python."""
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}")


def seed_model(seed=0, backend="cpu"):
    """The seed network (784-512-10, RMSprop), compiled, on ``backend``."""
    model = dnn.Sequential([Dense(HIDDEN, activation="relu"),
                            Dense(CLASSES, activation="softmax")], seed=seed, backend=backend)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def time_dnn_epoch(model, x, y) -> float:
    """Seconds of one training epoch of ``model`` (``History.seconds``: without evaluation)."""
    return model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0).seconds[0]


def median_nonzero_batch(x):
    """``(BATCH, i)``: the batch of a shuffled epoch of ``x`` whose number of columns that are
    not zero in every row is the median one."""
    order = np.random.default_rng(0).permutation(len(x))
    batches = [order[start:start + BATCH] for start in range(0, len(x), BATCH)]
    counts = [np.count_nonzero(x[rows].any(axis=0)) for rows in batches]
    return x[batches[np.argsort(counts)[len(counts) // 2]]]


def make_floor(x, update=False, nonzero_columns=False):
    """A function timing one epoch of the network's matrix products alone; with ``update``, each
    step also updates both kernels with the cpu backend's RMSprop kernel; with
    ``nonzero_columns``, the first layer's two products run over a batch's non-zero columns
    only (the shapes the cpu backend multiplies), a batch with the median count of them."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((x.shape[1], HIDDEN), np.float32)
    w2 = rng.standard_normal((HIDDEN, CLASSES), np.float32)
    sizes = [min(BATCH, len(x) - start) for start in range(0, len(x), BATCH)]
    source = median_nonzero_batch(x) if nonzero_columns else x
    buffers = {}
    for n in set(sizes):
        kept = np.flatnonzero(source[:n].any(axis=0)) if nonzero_columns else slice(None)
        buffers[n] = dict(x=np.ascontiguousarray(source[:n, kept]), w1=w1[kept],
                          dw1=np.empty_like(w1[kept]), ms1=np.zeros_like(w1[kept]),
                          h=np.empty((n, HIDDEN), np.float32),
                          o=np.empty((n, CLASSES), np.float32),
                          dz=rng.standard_normal((n, CLASSES), np.float32),
                          dh=np.empty((n, HIDDEN), np.float32))
    dw2, ms2 = np.empty_like(w2), np.zeros_like(w2)
    rmsprop = dnn.backends.get_backend("cpu").fused_update("rmsprop")

    def epoch() -> float:
        started = time.perf_counter()
        for n in sizes:
            b = buffers[n]
            np.matmul(b["x"], b["w1"], out=b["h"])     # forward, layer 1
            np.matmul(b["h"], w2, out=b["o"])          # forward, layer 2
            np.matmul(b["h"].T, b["dz"], out=dw2)      # weight gradient, layer 2
            np.matmul(b["dz"], w2.T, out=b["dh"])      # input gradient of the hidden layer
            np.matmul(b["x"].T, b["dh"], out=b["dw1"])  # weight gradient, layer 1
            if update:
                for w, dw, ms in ((b["w1"], b["dw1"], b["ms1"]), (w2, dw2, ms2)):
                    rmsprop(w, dw, ms, None, None, 1e-3, 0.9, 0.0, 1e-7)
        return time.perf_counter() - started

    return epoch


def make_cross_core_probe(x, steps=50):
    """A function returning how many times longer the fused RMSprop update of a first-layer
    kernel takes right after BLAS, on all its threads, read the kernel than right after this
    thread wrote it: about 0.9-1.6 when the cores hand cache lines over quickly, 4-9 in the
    slow state of a VM whose cores do not (docs/benchmarks.md).  It tells the rounds apart."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((x.shape[1], HIDDEN), np.float32)
    source = kernel.copy()
    grad = rng.standard_normal(kernel.shape, np.float32) * 1e-3
    mean_square, batch = np.abs(grad), np.ascontiguousarray(x[:BATCH])
    out = np.empty((BATCH, HIDDEN), np.float32)
    rmsprop = dnn.backends.get_backend("cpu").fused_update("rmsprop")

    def update_seconds(touch) -> float:
        spent = 0.0
        for _ in range(steps):
            touch()
            started = time.perf_counter()
            rmsprop(kernel, grad, mean_square, None, None, 1e-9, 0.9, 0.0, 1e-7)
            spent += time.perf_counter() - started
        return spent

    def penalty() -> float:
        written = update_seconds(lambda: np.copyto(kernel, source))
        read_by_blas = update_seconds(lambda: (np.copyto(kernel, source),
                                               np.matmul(batch, kernel, out=out)))
        return read_by_blas / written

    return penalty


def torch_train_epoch(net, optimizer, loss_fn, x, y, order) -> float:
    """One PyTorch epoch over tensors ``x``, ``y`` in ``order``, reading the loss once at the
    end as dnn does; returns the mean loss."""
    import torch

    total = torch.zeros((), device=x.device)
    for start in range(0, len(x), BATCH):
        index = order[start:start + BATCH]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x[index]), y[index])
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)
    return float(total) / len(x)


def make_torch(model, x, labels, seed=0):
    """A function timing one PyTorch epoch of the same network from dnn's initial weights,
    or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None, None
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, CLASSES))
    kernels = model.get_weights()
    with torch.no_grad():
        for layer, kernel, bias in ((net[0], kernels[0], kernels[1]),
                                    (net[2], kernels[2], kernels[3])):
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
            layer.bias.copy_(torch.from_numpy(bias))
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(labels)
    rng = np.random.default_rng(seed)

    def epoch() -> float:
        order = torch.from_numpy(rng.permutation(len(x)))
        started = time.perf_counter()
        torch_train_epoch(net, optimizer, loss_fn, x_t, y_t, order)
        return time.perf_counter() - started

    return epoch, torch.__version__


def peak_rss_of_dnn_train(data_dir, epochs=1) -> float:
    """Peak resident memory (MiB) of a ``dnn train`` of ``epochs`` on MNIST in a child
    process."""
    # VmHWM is the child's own high-water mark (ru_maxrss would count the forked parent too).
    child = ("import re, sys\n"
             "from dnn.cli import main\n"
             "main(sys.argv[1:], standalone_mode=False)\n"
             "status = open('/proc/self/status').read()\n"
             "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n")
    data = [] if data_dir is None else ["--data-dir", str(data_dir)]
    finished = subprocess.run(
        [sys.executable, "-c", child, "train", "--epochs", str(epochs), "--quiet", *data],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return int(finished.stderr.split()[-1]) / 1024  # Linux reports KiB


def summary(values) -> dict:
    """Median, least and greatest of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def step_times(timers: dict, rounds: int, steps: int) -> dict:
    """name -> each round's milliseconds per step of ``timers`` (name -> a function that
    trains ``steps`` steps and returns its seconds), after a warm-up round (buffers made,
    kernels chosen), interleaved round by round so that machine noise hits them alike."""
    for timer in timers.values():
        timer()
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer() / steps * 1000)
    return times


def positive(text: str) -> int:
    """``text`` as a positive integer (an argparse type: anything else is its usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def epoch_timers(x, y, batch: int, dnn_model, torch_steps, torch) -> dict:
    """name -> a function that trains one epoch over ``x`` and ``y`` in batches of ``batch``
    and returns its seconds: ``"dnn"``, ``dnn_model()``'s ``fit``; ``"torch"``, where
    ``torch`` (the module, or None) is installed, the function ``torch_steps(torch, x, y)``
    gives, which trains PyTorch's model on the rows of a slice, on as many threads as this
    process may use (dnn's BLAS uses as many)."""
    model = dnn_model()

    def dnn_epoch() -> float:
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start

    timers = {"dnn": dnn_epoch}
    if torch is not None:
        torch.manual_seed(0)
        torch.set_num_threads(process_threads())
        step = torch_steps(torch, x, y)

        def torch_epoch() -> float:
            start = time.perf_counter()
            for first in range(0, len(x), batch):
                step(slice(first, first + batch))
            return time.perf_counter() - start

        timers["torch"] = torch_epoch
    return timers


def model_benchmark(doc: str, batch: int, steps: int, data, dnn_model, torch_steps) -> int:
    """The command line of a benchmark of one model, dnn next to PyTorch where it is
    installed (``doc`` its script's docstring): ``--rounds``, ``--steps`` (``steps`` by
    default), ``--json`` and ``--quick``; ``data(rows)`` gives ``(x, y)``, and
    :func:`epoch_timers` of ``dnn_model`` and ``torch_steps`` the timers of
    :func:`step_times`.  Prints (and writes) :func:`report_step_times`; returns 0."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=5)
    parser.add_argument("--steps", type=positive, default=steps)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="one round of 3 steps: checks the script works, in seconds")
    args = parser.parse_args()
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: dnn timed alone (pip install torch to compare)")
    timers = epoch_timers(*data(steps * batch), batch, dnn_model, torch_steps, torch)
    times = step_times(timers, rounds, steps)
    report_step_times(times, torch, {"quick": args.quick, "rounds": rounds, "steps": steps,
                                     "batch": batch}, args.json)
    return 0


def report_step_times(times: dict, torch, result: dict, json_path) -> None:
    """Print each timer's median step of :func:`step_times`' ``times`` and, where PyTorch
    (the module ``torch``, or None) ran as ``"torch"``, the per-round ratio of ``"dnn"`` to
    it; add them to ``result`` (whose ``rounds``, ``steps`` and ``batch`` say what ran) and
    write it to ``json_path``, if given."""
    print(machine_line())
    step_ms = {name: summary(values) for name, values in times.items()}
    for name, stats in step_ms.items():
        print(f"{name:>6} step: median {stats['median']:8.1f} ms (min {stats['min']:.1f}, "
              f"max {stats['max']:.1f}) over {result['rounds']} rounds of {result['steps']} "
              f"steps of {result['batch']}")
    result.update({"machine": machine_line().removeprefix("machine: "), "step_ms": step_ms})
    if torch is not None:
        ratios = [ours / theirs for ours, theirs in zip(times["dnn"], times["torch"])]
        result["torch"] = torch.__version__
        result["dnn_over_torch"] = summary(ratios)
        print(f"dnn / torch {torch.__version__}: median per-round ratio "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    if json_path:
        write_json(json_path, result)


def print_ratios(ratios: dict) -> None:
    """One line per ratio: its median and spread over the rounds."""
    for name, stats in ratios.items():
        print(f"{name:>17}: median {stats['median']:.3f} "
              f"(min {stats['min']:.3f}, max {stats['max']:.3f})")


def blas_info() -> str:
    """NumPy's BLAS: name and version."""
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def make_timers(x, labels, with_torch: bool):
    """``({name: function timing one epoch}, torch version or None)`` on the same data."""
    y = to_categorical(labels, CLASSES)
    model = seed_model()
    model.build(x.shape[1])
    timers = {"dnn": lambda: time_dnn_epoch(model, x, y)}
    if C_KERNELS:
        numpy_model = seed_model(backend=CpuBackend(c_kernels=False))
        timers["dnn-numpy"] = lambda: time_dnn_epoch(numpy_model, x, y)
    timers.update({"floor": make_floor(x), "floor+update": make_floor(x, update=True),
                   "floor-nonzero": make_floor(x, nonzero_columns=True)})
    torch_epoch, torch_version = make_torch(model, x, labels) if with_torch else (None, None)
    if torch_epoch:
        timers["torch"] = torch_epoch
    return timers, torch_version


def run_rounds(timers: dict, probe, rounds: int):
    """``(times, penalties)``: each timer's seconds per round after a warm-up, interleaved, and
    per round the highest cross-core penalty of the probes before, between and after its
    epochs."""
    for timer in timers.values():  # warm-up: buffers, BLAS threads, caches
        timer()
    times = {name: [] for name in timers}
    penalties = []
    for _ in range(rounds):
        round_penalties = [probe()]
        for name, timer in timers.items():
            times[name].append(timer())
            round_penalties.append(probe())
        penalties.append(max(round_penalties))
    return times, penalties


def ratios_of(times: dict) -> dict:
    """Per round, dnn's epoch over each floor's and over the others' (those that ran)."""
    others = ["floor", "floor+update", "floor-nonzero",
              *(name for name in ("dnn-numpy", "torch") if name in times)]
    return {f"dnn/{other}": [d / o for d, o in zip(times["dnn"], times[other])]
            for other in others}


def machine(torch_version) -> dict:
    """What the figures were measured on."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas_info(), "torch": torch_version,
            "threads": {name: os.environ.get(name, "default")
                        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def print_result(result: dict) -> None:
    """The machine, the epochs' medians and spreads, the ratios, over all rounds and over the
    quiet ones, and the peak RSS."""
    print(machine_line())
    for name, stats in result["epoch_seconds"].items():
        print(f"{name:>13} epoch: median {stats['median']:.3f} s "
              f"(min {stats['min']:.3f}, max {stats['max']:.3f})")
    print_ratios(result["ratios"])
    penalties = result["by_round"]["cross_core_penalty"]
    quiet = result["quiet_rounds"]
    print(f"{quiet} of {result['rounds']} rounds quiet (cross-core penalty below "
          f"{QUIET_PENALTY}: {', '.join(f'{p:.1f}' for p in penalties)})"
          + ("; in those:" if quiet else ""))
    print_ratios(result["ratios_in_quiet_rounds"])
    print(f"peak RSS of dnn train: {result['peak_rss_mib_dnn_train']:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--no-torch", action="store_true")
    add_quick_option(parser)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds

    (x, labels), _ = load_mnist(args.data_dir, QUICK_ROWS if args.quick else None)
    timers, torch_version = make_timers(x, labels, with_torch=not args.no_torch)
    times, penalties = run_rounds(timers, make_cross_core_probe(x), rounds)
    quiet = [penalty < QUIET_PENALTY for penalty in penalties]
    ratios = ratios_of(times)
    result = {
        "machine": machine(torch_version),
        "rounds": rounds,
        "quick": args.quick,
        "epoch_seconds": {k: summary(v) for k, v in times.items()},
        "ratios": {k: summary(v) for k, v in ratios.items()},
        "quiet_rounds": sum(quiet),
        "ratios_in_quiet_rounds": {k: summary([r for r, q in zip(v, quiet) if q])
                                   for k, v in ratios.items() if any(quiet)},
        "by_round": {"epoch_seconds": times, "ratios": ratios,
                     "cross_core_penalty": penalties},
        "peak_rss_mib_dnn_train": peak_rss_of_dnn_train(args.data_dir,
                                                        epochs=0 if args.quick else 1),
    }
    print_result(result)
    if args.json_path:
        write_json(args.json_path, result)


if __name__ == "__main__":
    main()
