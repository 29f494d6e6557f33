#!/usr/bin/env python
"""CPU benchmark of Keras' "Simple MNIST convnet" training step: dnn next to PyTorch.

The network (keras.io/examples/vision/mnist_convnet): Input (28, 28, 1) -> Conv2D 32 3x3 relu
-> MaxPooling2D 2 -> Conv2D 64 3x3 relu -> MaxPooling2D 2 -> Flatten -> Dropout 0.5 -> Dense 10
softmax; Adam, categorical cross-entropy, batch 128.  In one run, on the same synthetic data
of MNIST's shape (random pixels and labels: no files needed), it times per round:
  dnn    ``Sequential.fit`` over --steps batches (one epoch of that many rows),
  torch  the same network, loss (CrossEntropyLoss on the logits) and optimizer (Adam,
         eps 1e-7 as Keras) in PyTorch CPU over as many batches, in the memory format that was
         faster in the warm-up (channels-last or the default), with torch.set_num_threads set
         to the cores this process may use (dnn's BLAS uses as many),
  dnn-numpy  the same with the C extension turned off (the generic NumPy window kernels: an
         install without a C compiler),
  floor  the matrix products of dnn's step alone (the two Conv2D layers' im2col products, their
         weight gradients and the second one's input gradient, and the Dense layer's three),
         with the same shapes, through NumPy's BLAS,
interleaved round by round so that machine noise hits them alike, and reports per step the
medians and spreads (milliseconds), an epoch's worth (the 422 steps of the Keras example's
54,000 training images), the per-round ratios of dnn to the others, and dnn's rate in
GFLOP/s (the products' floating-point operations over its step time) next to the machine's
float32 matmul rate (np.matmul of two large square matrices).  It also measures the peak
RSS of a child process running one epoch as the example does, on 60,000 synthetic images with
validation_split=0.1, and its evaluation on 10,000.

    python scripts/bench_convnet.py [--rounds 5] [--steps 20] [--json out.json] [--no-torch]
    python scripts/bench_convnet.py --profile   # cProfile of dnn's steps, the top entries

``--quick`` checks that the script works, in seconds: one round of a few steps and a small
matmul (its figures measure nothing worth quoting).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import dnn
from bench import add_quick_option, blas_info, cpu_model, machine_line, summary, write_json
from dnn.backends.cpu import C_KERNELS, CpuBackend
from dnn.distributed.threads import process_threads
from dnn.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from dnn.utils import to_categorical

BATCH, CLASSES, IMAGE = 128, 10, (28, 28, 1)
EPOCH_STEPS = 422  # the Keras example: 60,000 images less validation_split=0.1, batch 128
QUICK_STEPS = 3
FULL_ROWS, QUICK_ROWS = 60_000, 512  # images of the epoch whose peak memory is measured


def dnn_model(seed=0, backend="cpu"):
    """The Keras example's network, compiled as it compiles it, on ``backend``."""
    model = dnn.Sequential([Input(shape=IMAGE),
                            Conv2D(32, kernel_size=(3, 3), activation="relu"),
                            MaxPooling2D(pool_size=(2, 2)),
                            Conv2D(64, kernel_size=(3, 3), activation="relu"),
                            MaxPooling2D(pool_size=(2, 2)),
                            Flatten(),
                            Dropout(0.5),
                            Dense(CLASSES, activation="softmax")], seed=seed, backend=backend)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def synthetic_data(rows: int, seed=0):
    """``(x, labels)``: ``rows`` random images of MNIST's shape in [0, 1) and random labels."""
    rng = np.random.default_rng(seed)
    return (rng.random((rows, *IMAGE), dtype=np.float32),
            rng.integers(0, CLASSES, rows).astype(np.int64))


def peak_rss_of_an_epoch(rows: int) -> float:
    """Peak resident memory (MiB) of a child process that runs the Keras example's epoch as
    its script does: ``fit`` on ``rows`` images with validation_split=0.1, then ``evaluate``
    on a sixth as many (MNIST's test set beside its training set)."""
    child = ("import re, sys\n"
             f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
             "from bench_convnet import dnn_model, synthetic_data\n"
             "from dnn.utils import to_categorical\n"
             f"x, labels = synthetic_data({rows})\n"
             "y = to_categorical(labels, 10)\n"
             "model = dnn_model()\n"
             "model.fit(x, y, batch_size=128, epochs=1, validation_split=0.1, verbose=0)\n"
             f"model.evaluate(x[:{max(rows // 6, 1)}], y[:{max(rows // 6, 1)}], verbose=0)\n"
             "status = open('/proc/self/status').read()\n"
             "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n")
    finished = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True,
                              text=True)
    return int(finished.stdout.split()[-1]) / 1024  # Linux reports KiB


def step_flops(batch=BATCH) -> int:
    """The floating-point operations of the products of one training step (2 per multiply-add):
    each layer's forward product and weight gradient, and the input gradient of every layer but
    the first."""
    flops = 0
    height, width, channels = IMAGE
    first = True
    for filters in (32, 64):
        height, width = height - 2, width - 2
        rows, inner = batch * height * width, 9 * channels
        flops += (2 if first else 3) * 2 * rows * inner * filters
        first = False
        channels = filters
        height, width = height // 2, width // 2
    flops += 3 * 2 * batch * height * width * channels * CLASSES
    return flops


def product_shapes(batch=BATCH) -> list:
    """``(a_shape, b_shape, transpose_a)`` of every product of one step, as dnn's backend
    multiplies them (``x.T @ grad`` for the weight gradients)."""
    shapes = []
    height, width, channels = IMAGE
    first = True
    for filters in (32, 64):
        height, width = height - 2, width - 2
        rows, inner = batch * height * width, 9 * channels
        shapes += [((rows, inner), (inner, filters), False),  # forward
                   ((rows, inner), (rows, filters), True)]  # weight gradient
        if not first:
            shapes.append(((rows, filters), (filters, inner), False))  # input gradient
        first = False
        channels = filters
        height, width = height // 2, width // 2
    features = height * width * channels
    shapes += [((batch, features), (features, CLASSES), False),
               ((batch, features), (batch, CLASSES), True),
               ((batch, CLASSES), (CLASSES, features), False)]
    return shapes


def make_floor(steps: int):
    """A function timing ``steps`` steps' worth of the products alone (seconds)."""
    rng = np.random.default_rng(0)
    operands = []
    for a_shape, b_shape, transpose in product_shapes():
        a = rng.standard_normal(a_shape, np.float32)
        b = rng.standard_normal(b_shape, np.float32)
        out_shape = (a_shape[1], b_shape[1]) if transpose else (a_shape[0], b_shape[1])
        operands.append((a.T if transpose else a, b, np.empty(out_shape, np.float32)))

    def run() -> float:
        started = time.perf_counter()
        for _ in range(steps):
            for a, b, out in operands:
                np.matmul(a, b, out=out)
        return time.perf_counter() - started

    return run


def make_dnn(x, y, backend="cpu"):
    """``(function timing one fit epoch of the convnet over x (seconds), the model)``."""
    model = dnn_model(backend=backend)

    def run() -> float:
        return model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0).seconds[0]

    return run, model


def make_torch(x, labels, threads: int, warmup_steps: int):
    """``(function timing one epoch, description)`` of the same network in PyTorch over the
    same data, in the faster of the two memory formats; ``(None, reason)`` without torch."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (n, 1, 28, 28)
    y_t = torch.from_numpy(labels)
    rng = np.random.default_rng(0)

    def build(memory_format):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(64 * 5 * 5, CLASSES))
        net = net.to(memory_format=memory_format)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = torch.nn.CrossEntropyLoss()
        inputs = x_t.contiguous(memory_format=memory_format)

        def epoch(steps=None) -> float:
            order = torch.from_numpy(rng.permutation(len(inputs)))
            count = len(inputs) if steps is None else min(len(inputs), steps * BATCH)
            net.train()
            started = time.perf_counter()
            total = torch.zeros(())
            for start in range(0, count, BATCH):
                index = order[start:start + BATCH]
                batch = inputs[index].contiguous(memory_format=memory_format)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(batch), y_t[index])
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(index)
            float(total)
            return time.perf_counter() - started

        return epoch

    candidates = {"channels-last": build(torch.channels_last),
                  "contiguous (NCHW)": build(torch.contiguous_format)}
    trial = {}
    for name, epoch in candidates.items():
        epoch(warmup_steps)  # first-call costs
        trial[name] = min(epoch(warmup_steps) for _ in range(2))
    best = min(trial, key=trial.get)
    note = ", ".join(f"{name} {seconds / warmup_steps * 1e3:.1f} ms/step"
                     for name, seconds in trial.items())
    return candidates[best], (f"torch {torch.__version__}, {threads} threads, {best} "
                              f"(warm-up: {note})")


def matmul_gflops(size: int, repeats: int = 5) -> float:
    """The best float32 np.matmul rate of two ``size`` x ``size`` matrices, GFLOP/s."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), np.float32)
    b = rng.standard_normal((size, size), np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = min(_seconds(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run_rounds(timers: dict, rounds: int) -> dict:
    """Each timer's seconds per round after a warm-up, interleaved."""
    for timer in timers.values():
        timer()
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return times


def profile_dnn(model, x, y, top: int) -> None:
    """cProfile of one ``fit`` epoch of ``model`` over ``x``: the ``top`` entries by own time
    and by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's threads (default: the cores this process may use, as "
                             "many as NumPy's OpenBLAS starts with)")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of dnn's steps instead of benchmarking")
    add_quick_option(parser)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    steps = QUICK_STEPS if args.quick else args.steps
    matmul_size = 256 if args.quick else args.matmul_size
    threads = args.threads or process_threads()

    x, labels = synthetic_data(steps * BATCH)
    y = to_categorical(labels, CLASSES)
    dnn_epoch, model = make_dnn(x, y)
    if args.profile:
        dnn_epoch()  # warm-up
        profile_dnn(model, x, y, top=12 if args.quick else 30)
        return
    timers = {"dnn": dnn_epoch, "floor": make_floor(steps)}
    if C_KERNELS is not None:
        timers["dnn-numpy"] = make_dnn(x, y, CpuBackend(c_kernels=False))[0]
    torch_note = "torch not run (--no-torch)"
    if not args.no_torch:
        torch_epoch, torch_note = make_torch(x, labels, threads, min(steps, 5))
        if torch_epoch is not None:
            timers["torch"] = torch_epoch
    times = run_rounds(timers, rounds)
    matmul = matmul_gflops(matmul_size)
    flops = step_flops()

    step_ms = {name: summary([t / steps * 1e3 for t in values]) for name, values in times.items()}
    ratios = {f"dnn/{other}": summary([d / o for d, o in zip(times["dnn"], times[other])])
              for other in times if other != "dnn"}
    dnn_gflops = flops / (step_ms["dnn"]["median"] / 1e3) / 1e9
    floor_gflops = flops / (step_ms["floor"]["median"] / 1e3) / 1e9
    result = {
        "quick": args.quick, "rounds": rounds, "steps": steps, "batch": BATCH,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
                    "blas_threads": {name: os.environ.get(name, "default")
                                     for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                    "python": platform.python_version(), "numpy": np.__version__,
                    "blas": blas_info(), "c_kernels": C_KERNELS is not None,
                    "torch": torch_note},
        "step_ms": step_ms,
        "epoch_s": {name: stats["median"] * EPOCH_STEPS / 1e3 for name, stats in step_ms.items()},
        "ratios": ratios,
        "step_gflop": flops / 1e9,
        "dnn_gflops": dnn_gflops,
        "floor_gflops": floor_gflops,
        "matmul_gflops": matmul, "matmul_size": matmul_size,
        "by_round": times,
        "peak_rss_mib_epoch": peak_rss_of_an_epoch(QUICK_ROWS if args.quick else FULL_ROWS),
    }
    print(machine_line())
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS") or "default"
    print(f"numpy {np.__version__} ({blas_info()}, OPENBLAS_NUM_THREADS {blas_threads}); "
          f"C kernels {'built' if C_KERNELS is not None else 'not built'}; {torch_note}")
    print(f"{rounds} round(s) of {steps} steps, batch {BATCH}")
    for name, stats in step_ms.items():
        print(f"{name:>9} step: median {stats['median']:7.2f} ms (min {stats['min']:.2f}, "
              f"max {stats['max']:.2f}); epoch of {EPOCH_STEPS} steps "
              f"{result['epoch_s'][name]:.1f} s")
    for name, stats in ratios.items():
        print(f"{name:>13}: median {stats['median']:.3f} (min {stats['min']:.3f}, "
              f"max {stats['max']:.3f})")
    print(f"products: {flops / 1e9:.3f} GFLOP per step; dnn {dnn_gflops:.1f} GFLOP/s, floor "
          f"{floor_gflops:.1f} GFLOP/s, float32 matmul {matmul_size}x{matmul_size} "
          f"{matmul:.1f} GFLOP/s (dnn at {dnn_gflops / matmul:.0%} of it)")
    print(f"peak RSS of an epoch on {QUICK_ROWS if args.quick else FULL_ROWS:,} images and "
          f"its evaluation: {result['peak_rss_mib_epoch']:.0f} MiB")
    if args.json_path:
        write_json(args.json_path, result)


if __name__ == "__main__":
    main()
