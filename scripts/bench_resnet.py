#!/usr/bin/env python
"""CPU benchmark of a functional model whose layers make a graph: the toy ResNet of Keras'
functional API guide (examples/mnist_resnet.py) on MNIST-shaped images, dnn next to PyTorch.

The network: Conv2D 32 3x3 relu -> Conv2D 64 3x3 relu -> MaxPooling2D 3 -> two residual
blocks (two Conv2D 64 3x3 "same" relu, added to the block's input) -> Conv2D 64 3x3 relu ->
GlobalAveragePooling2D -> Dense 256 relu -> Dropout 0.5 -> Dense 10 (logits); RMSprop 1e-3,
categorical cross-entropy on the logits, batch 64, float32.  In one run, on the same synthetic
data (random pixels and labels: no files needed), it times per round:
  dnn    ``Model.fit`` over --steps batches (one epoch of that many rows),
  torch  the same network, loss and optimizer (RMSprop, alpha 0.9, eps 1e-7, which PyTorch
         adds outside the square root, Keras inside: the same work) in PyTorch CPU
         over as many batches, channels-last, with torch.set_num_threads set to the cores this
         process may use (dnn's BLAS uses as many),
interleaved round by round so that machine noise hits both alike, and reports per step the
medians and spreads (milliseconds) and the per-round ratio of dnn to PyTorch.  Without
PyTorch it times dnn alone.

    python scripts/bench_resnet.py [--rounds 5] [--steps 30] [--json out.json]

``--quick`` checks that the script works, in seconds: one round of a few steps (its figures
measure nothing worth quoting).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import dnn
from bench import machine_line, summary, write_json
from dnn import layers
from dnn.distributed.threads import process_threads

BATCH, CLASSES, IMAGE = 64, 10, (28, 28, 1)


def dnn_resnet(seed=0) -> dnn.Model:
    """examples/mnist_resnet.py's network, compiled as it compiles it, on the cpu backend."""
    inputs = dnn.Input(shape=IMAGE)
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(3)(layers.Conv2D(64, 3, activation="relu")(x))
    for _ in range(2):
        block = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
        x = layers.add([layers.Conv2D(64, 3, activation="relu", padding="same")(block), x])
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(64, 3, activation="relu")(x))
    x = layers.Dropout(0.5)(layers.Dense(256, activation="relu")(x))
    model = dnn.Model(inputs, layers.Dense(CLASSES)(x), seed=seed, backend="cpu")
    model.compile(optimizer=dnn.optimizers.RMSprop(1e-3),
                  loss=dnn.losses.CategoricalCrossentropy(from_logits=True))
    return model


def torch_resnet(torch):
    """The same network in PyTorch, channels-last, and its optimizer."""
    nn = torch.nn

    class ToyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3),
                                      nn.ReLU(), nn.MaxPool2d(3))
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Conv2d(64, 64, 3, padding="same"), nn.ReLU(),
                              nn.Conv2d(64, 64, 3, padding="same"), nn.ReLU())
                for _ in range(2))
            self.tail = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.5),
                                      nn.Linear(256, CLASSES))

        def forward(self, x):
            x = self.head(x)
            for block in self.blocks:
                x = block(x) + x
            return self.tail(x)

    network = ToyResNet().to(memory_format=torch.channels_last)
    return network, torch.optim.RMSprop(network.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)


def make_timers(x, y, with_torch: bool) -> dict:
    """name -> a function that trains one epoch over ``x`` and returns its seconds."""
    model = dnn_resnet()

    def dnn_epoch() -> float:
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start

    timers = {"dnn": dnn_epoch}
    if with_torch:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(process_threads())
        network, optimizer = torch_resnet(torch)
        images = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
        targets = torch.from_numpy(y)

        def torch_epoch() -> float:
            start = time.perf_counter()
            network.train()
            for first in range(0, len(x), BATCH):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(
                    network(images[first:first + BATCH]), targets[first:first + BATCH])
                loss.backward()
                optimizer.step()
            return time.perf_counter() - start

        timers["torch"] = torch_epoch
    return timers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
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
    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, *IMAGE), dtype=np.float32)
    y = dnn.utils.to_categorical(rng.integers(0, CLASSES, steps * BATCH), CLASSES)
    timers = make_timers(x, y, torch is not None)
    for timer in timers.values():  # warm-up: buffers made, kernels chosen
        timer()
    times = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer() / steps * 1000)
    print(machine_line())
    step_ms = {name: summary(values) for name, values in times.items()}
    for name, stats in step_ms.items():
        print(f"{name:>6} step: median {stats['median']:8.1f} ms (min {stats['min']:.1f}, "
              f"max {stats['max']:.1f}) over {rounds} rounds of {steps} steps of {BATCH}")
    result = {"quick": args.quick, "rounds": rounds, "steps": steps, "batch": BATCH,
              "machine": machine_line(), "step_ms": step_ms}
    if torch is not None:
        ratios = [ours / theirs for ours, theirs in zip(times["dnn"], times["torch"])]
        result["torch"] = torch.__version__
        result["dnn_over_torch"] = summary(ratios)
        print(f"dnn / torch {torch.__version__}: median per-round ratio "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
