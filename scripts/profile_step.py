#!/usr/bin/env python
"""Where the cpu backend's training epoch goes, phase by phase, next to the matmul floor.

Runs the seed network's training step (784-512-10, RMSprop, batch 128) as ``Sequential.fit``
does (``Trainer.train_step``: the batch gathered, ``compute_gradients``, ``apply_gradients``,
the metrics updated), with a clock around each phase, for a few epochs after a warm-up, and
prints the median milliseconds per epoch of each phase: the batch gather, each layer's forward
and backward pass (products included), the loss, the optimizer step and the accuracy count.
It then times the RMSprop kernel alone at several sizes, in nanoseconds per element: a figure
that does not grow once the arrays leave the caches means the update is bound by arithmetic,
not memory.

    python scripts/profile_step.py --data-dir ../shared/data/mnist [--epochs 5]

``--quick`` checks that the script works, in seconds: one epoch on the first 512 training
images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit

import numpy as np

from bench import (BATCH, CLASSES, QUICK_ROWS, add_quick_option, load_mnist, machine_line,
                   make_floor, seed_model)
from dnn.trainers.data import DeviceData
from dnn.trainers.epoch_iterator import ArrayBatches
from dnn.utils import to_categorical


class Laps:
    """Seconds spent per phase, each lap ending the phase it names."""

    def __init__(self):
        self.spent: dict = {}
        self._previous = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.spent[phase] = self.spent.get(phase, 0.0) + now - self._previous
        self._previous = now


def forward(model, x, laps, takes_logits: bool):
    """Each layer's forward pass, one phase each; returns the last layer's output."""
    last = len(model.layers)
    for number, layer in enumerate(model.layers, 1):
        x = layer.forward(x, logits=takes_logits and number == last, training=True)
        laps(f"forward {number}")
    return x


def backward(model, grad, laps, takes_logits: bool) -> None:
    """Each layer's backward pass, last layer first, one phase each."""
    last = len(model.layers)
    for number in range(last, 0, -1):
        grad = model.layers[number - 1].backward(grad, logits=takes_logits and number == last)
        laps(f"backward {number}")


def profile_epoch(model, batches: ArrayBatches) -> dict:
    """Seconds per phase of one epoch of ``batches`` (shuffled rows of the device data) through
    ``model``'s training step, taken apart."""
    laps, backend, loss = Laps(), model.backend, model.loss
    takes_logits = loss.takes_logits_of(model.layers[-1].activation)
    grads = {}  # the loss gradient's buffer, per batch size
    for batch in batches.epoch():
        x = model.gather("x_batch", batch.data.x, batch.indices)
        y = model.gather("y_batch", batch.data.y, batch.indices)
        laps("gather")
        output = forward(model, x, laps, takes_logits)
        grad = grads.setdefault(output.shape, backend.empty(output.shape, output.dtype))
        loss.compute(backend, output, y, grad, logits=takes_logits)
        laps("loss")
        backward(model, grad, laps, takes_logits)
        model.apply_gradients()
        laps("update")
        for metric in model.metrics:
            metric.update_state(y, output)
        laps("accuracy")
    return laps.spent


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


def print_profile(epochs: list, floors: list) -> None:
    """Each phase's median milliseconds per epoch, then their total next to the floor's."""
    for phase in epochs[0]:
        print(f"{phase:>12}: {statistics.median(e[phase] for e in epochs) * 1e3:7.1f} ms/epoch")
    total = statistics.median(sum(epoch.values()) for epoch in epochs)
    floor = statistics.median(floors)
    print(f"{'total':>12}: {total * 1e3:7.1f} ms/epoch (floor {floor * 1e3:.1f} ms; the forward "
          "and backward phases hold the products)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    add_quick_option(parser)
    args = parser.parse_args()

    (x, labels), _ = load_mnist(args.data_dir, QUICK_ROWS if args.quick else None)
    model = seed_model()
    data = DeviceData.from_host(model, x, to_categorical(labels, CLASSES))  # builds the model
    batches = ArrayBatches(data, BATCH, model.backend, np.random.default_rng(0), shuffle=True)
    floor = make_floor(x)
    profile_epoch(model, batches), floor()  # warm-up
    epochs, floors = [], []
    for _ in range(1 if args.quick else args.epochs):  # interleaved: noise hits both alike
        epochs.append(profile_epoch(model, batches))
        floors.append(floor())
    print(machine_line())
    print_profile(epochs, floors)
    for size, nanoseconds in update_ns_per_element(model.backend).items():
        print(f"RMSprop update, {size:>9,} elements ({size * 4 / 2**20:5.2f} MiB each array): "
              f"{nanoseconds:.3f} ns/element")


if __name__ == "__main__":
    main()
