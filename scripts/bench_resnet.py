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

import sys

import numpy as np

import dnn
from bench import model_benchmark
from dnn import layers

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


def torch_steps(torch, x, y):
    """A function that trains the PyTorch network on the rows of a slice of ``x`` and ``y``
    (:func:`bench.epoch_timers`)."""
    network, optimizer = torch_resnet(torch)
    images = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
    targets = torch.from_numpy(y)
    network.train()

    def step(rows: slice) -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(images[rows]), targets[rows]).backward()
        optimizer.step()
    return step


def data(rows: int) -> tuple:
    """``(x, y)``: ``rows`` random images and one-hot labels."""
    rng = np.random.default_rng(0)
    return (rng.random((rows, *IMAGE), dtype=np.float32),
            dnn.utils.to_categorical(rng.integers(0, CLASSES, rows), CLASSES))


if __name__ == "__main__":
    sys.exit(model_benchmark(__doc__, BATCH, 30, data, dnn_resnet, torch_steps))
