#!/usr/bin/env python
"""CPU benchmark of a text classifier: Keras' basic text classification network (an Embedding
averaged over each text), dnn next to PyTorch.

The network: Embedding 10,000 x 16 -> GlobalAveragePooling1D -> Dense 16 relu -> Dense 1
(a logit); Adam (lr 1e-3, eps 1e-7), binary cross-entropy on the logit, batch 32, texts of
200 word indices, float32.  In one run, on the same synthetic data (random indices and
labels: no files needed), it times per round:
  dnn    ``Model.fit`` over --steps batches (one epoch of that many texts),
  torch  the same network (nn.Embedding, its dense gradient, the mean over the words),
         loss and optimizer in PyTorch CPU over as many batches, with
         torch.set_num_threads set to the cores this process may use (dnn's BLAS uses as
         many),
interleaved round by round so that machine noise hits both alike, and reports per step the
medians and spreads (milliseconds) and the per-round ratio of dnn to PyTorch.  Without
PyTorch it times dnn alone.

    python scripts/bench_text.py [--rounds 5] [--steps 200] [--json out.json]

``--quick`` checks that the script works, in seconds: one round of a few steps (its figures
measure nothing worth quoting).
"""

from __future__ import annotations

import sys

import numpy as np

import dnn
from bench import model_benchmark
from dnn import layers

BATCH, WORDS, VOCABULARY, WIDTH = 32, 200, 10_000, 16


def dnn_text_model(seed=0) -> dnn.Model:
    """The network, compiled, on the cpu backend."""
    inputs = dnn.Input(shape=(WORDS,), dtype="int32")
    x = layers.GlobalAveragePooling1D()(layers.Embedding(VOCABULARY, WIDTH)(inputs))
    model = dnn.Model(inputs, layers.Dense(1)(layers.Dense(16, activation="relu")(x)),
                      seed=seed, backend="cpu")
    model.compile(optimizer=dnn.optimizers.Adam(1e-3),
                  loss=dnn.losses.BinaryCrossentropy(from_logits=True))
    return model


def torch_steps(torch, x, y):
    """A function that trains the same network in PyTorch on the rows of a slice of ``x``
    and ``y`` (:func:`bench.epoch_timers`)."""
    nn = torch.nn
    embedding = nn.Embedding(VOCABULARY, WIDTH)
    head = nn.Sequential(nn.Linear(WIDTH, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam([*embedding.parameters(), *head.parameters()], lr=1e-3,
                                 eps=1e-7)
    words, labels = torch.from_numpy(x), torch.from_numpy(y[:, None])

    def step(rows: slice) -> None:
        optimizer.zero_grad()
        logits = head(embedding(words[rows]).mean(dim=1))
        nn.functional.binary_cross_entropy_with_logits(logits, labels[rows]).backward()
        optimizer.step()
    return step


def data(rows: int) -> tuple:
    """``(x, y)``: ``rows`` texts of random word indices and random labels."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, VOCABULARY, size=(rows, WORDS)),
            rng.integers(0, 2, size=rows).astype(np.float32))


if __name__ == "__main__":
    sys.exit(model_benchmark(__doc__, BATCH, 200, data, dnn_text_model, torch_steps))
