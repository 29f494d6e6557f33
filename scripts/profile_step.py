#!/usr/bin/env python
"""Where the cpu backend's training epoch goes, phase by phase, next to the matmul floor.

Runs the seed network's training step (784-512-10, RMSprop, batch 128) as ``Sequential.fit``
does, with a clock around each phase, for a few epochs after a warm-up, and prints the median
milliseconds per epoch of each phase: the batch gather, each layer's forward and backward pass
(products included), the loss, the optimizer step and the accuracy count.  It then times the
RMSprop kernel alone at several sizes, in nanoseconds per element: a figure that does not grow
once the arrays leave the caches means the update is bound by arithmetic, not memory.

    python scripts/profile_step.py --data-dir ../shared/data/mnist [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit

import numpy as np

from bench import BATCH, make_floor, seed_model
from dnn.datasets import get
from dnn.utils import to_categorical

PHASES = ("gather", "forward 1", "forward 2", "loss", "backward 2", "backward 1", "update",
          "accuracy")


def profile_epoch(model, x, y) -> dict:
    """Seconds per phase of one shuffled epoch of ``model`` on device arrays ``x``, ``y``."""
    spent = dict.fromkeys(PHASES, 0.0)
    hidden, output_layer = model.layers
    backend = model.backend
    correct = np.zeros((), np.int64)
    previous = time.perf_counter()

    def lap(phase):
        nonlocal previous
        now = time.perf_counter()
        spent[phase] += now - previous
        previous = now

    for x_batch, y_batch in model._batches(x, y, BATCH, model.rng.permutation(len(x))):
        lap("gather")
        activations = hidden.forward(x_batch)
        lap("forward 1")
        logits = output_layer.forward(activations, logits=True)
        lap("forward 2")
        grad = model._buffers("loss_grad", logits.shape, logits.dtype)
        model.loss.compute(backend, logits, y_batch, grad, logits=True)
        lap("loss")
        grad = output_layer.backward(grad, logits=True)
        lap("backward 2")
        hidden.backward(grad)
        lap("backward 1")
        model.optimizer.apply_gradients(model.params,
                                        [g for layer in model.layers for g in layer.grads])
        lap("update")
        correct += backend.correct_count(logits, y_batch)
        lap("accuracy")
    return spent


def update_ns_per_element(backend, sizes=(16384, 65536, 401408, 1605632)) -> dict:
    """The fused RMSprop update alone: nanoseconds per element for parameters of ``sizes``."""
    rng = np.random.default_rng(0)
    result = {}
    for size in sizes:
        param = rng.standard_normal(size).astype(np.float32)
        grad, mean_square = param * 1e-3, np.abs(param) * 1e-4
        number = max(20, 4_000_000 // size)
        seconds = timeit.timeit(lambda: backend.fused_update("rmsprop")(
            param, grad, mean_square, None, None, 1e-9, 0.9, 0.0, 1e-7), number=number)
        result[size] = seconds / number / size * 1e9
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    (x, labels), _ = get("mnist").load(args.data_dir)
    x = x.reshape(len(x), -1)
    model = seed_model()
    x_device, y_device = model._device_data(x, to_categorical(labels))
    floor = make_floor(x)
    profile_epoch(model, x_device, y_device), floor()  # warm-up
    epochs, floors = [], []
    for _ in range(args.epochs):  # interleaved, so that machine noise hits both alike
        epochs.append(profile_epoch(model, x_device, y_device))
        floors.append(floor())
    total = statistics.median(sum(epoch.values()) for epoch in epochs)
    for phase in PHASES:
        print(f"{phase:>12}: {statistics.median(e[phase] for e in epochs) * 1e3:7.1f} ms/epoch")
    print(f"{'total':>12}: {total * 1e3:7.1f} ms/epoch (floor {statistics.median(floors) * 1e3:.1f}"
          " ms; the forward and backward phases hold the products)")
    for size, nanoseconds in update_ns_per_element(model.backend).items():
        print(f"RMSprop update, {size:>9,} elements ({size * 4 / 2**20:5.2f} MiB each array): "
              f"{nanoseconds:.3f} ns/element")


if __name__ == "__main__":
    main()
