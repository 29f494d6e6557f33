#!/usr/bin/env python
"""dnn's convnets against PyTorch, step by step: the same network from the same weights on
the same batches, compared after every step.

Three networks on MNIST-shaped images (28x28x1, random, seeded: no files needed; the label is
the brightest of ten bands of rows), in float64 so that the comparison measures the formulas,
not float32 rounding:

  convnet     Keras' "Simple MNIST convnet" without its Dropout (whose masks no two libraries
              draw alike): Conv2D 32 3x3 relu, MaxPooling2D 2, Conv2D 64 3x3 relu,
              MaxPooling2D 2, Flatten, Dense 10 softmax;
  convnet-bn  the same with BatchNormalization after the second convolution (its relu then an
              Activation), AveragePooling2D for the second pooling and "same" padding, and
              the moving statistics compared too (PyTorch keeps an unbiased running variance:
              it is compared as the biased one Keras keeps);
  resnet      a functional model whose layers make a graph: Conv2D 8 3x3 relu, MaxPooling2D 2,
              a residual block (two Conv2D 8 3x3 "same", relu, added to its input by Add),
              then the block and its input flattened and joined by Concatenate, Dense 10
              softmax (the pooled output goes to three layers).

Both train with SGD with momentum 0.9 (the two libraries write the same update; their Adam
places epsilon differently) and categorical cross-entropy.  For each network it prints the
mean loss of the first and of the last five steps, the largest relative difference of the
loss over the steps and of every weight at the end, and
exits 1 if one exceeds ``--tolerance`` (1e-5).  PyTorch is never a dependency of dnn: without
it the script says so and exits 0.

    python scripts/convnet_vs_torch.py [--steps 40] [--batch 32] [--json out.json]

``--quick`` checks that the script works, in seconds: 3 steps of 8 images.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import dnn
from dnn.layers import (Activation, Add, AveragePooling2D, BatchNormalization, Concatenate,
                        Conv2D, Dense, Flatten, Input, MaxPooling2D)
from dnn.utils import to_categorical

LEARNING_RATE, MOMENTUM = 0.05, 0.9


def dnn_network(name: str) -> dnn.Sequential:
    if name == "resnet":
        return resnet()
    if name == "convnet":
        layers = [Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                  Conv2D(64, 3, activation="relu"), MaxPooling2D(2)]
    else:
        layers = [Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                  Conv2D(64, 3, padding="same"), BatchNormalization(), Activation("relu"),
                  AveragePooling2D(2)]
    model = dnn.Sequential([Input(shape=(28, 28, 1)), *layers, Flatten(),
                            Dense(10, activation="softmax")], dtype="float64", seed=0)
    model.compile(optimizer=dnn.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                  loss="categorical_crossentropy")
    return model


def resnet() -> dnn.Model:
    """The ``resnet`` network of the module docstring, compiled as the others."""
    inputs = Input(shape=(28, 28, 1))
    pooled = MaxPooling2D(2)(Conv2D(8, 3, activation="relu")(inputs))
    block = Conv2D(8, 3, padding="same", activation="relu")(pooled)
    block = Add()([Conv2D(8, 3, padding="same", activation="relu")(block), pooled])
    joined = Concatenate()([Flatten()(block), Flatten()(pooled)])
    model = dnn.Model(inputs, Dense(10, activation="softmax")(joined), dtype="float64", seed=0)
    model.compile(optimizer=dnn.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                  loss="categorical_crossentropy")
    return model


def torch_resnet(torch, model: dnn.Model):
    """PyTorch's :func:`resnet` with ``model``'s weights, its modules registered in dnn's
    weight order (images channels-first inside, channels-last in)."""
    nn = torch.nn
    convolutions = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    dense = model.layers[-1]

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.convolutions = nn.ModuleList()
            for layer in convolutions:
                kernel, bias = (torch.from_numpy(w.copy()) for w in layer.get_weights())
                conv = nn.Conv2d(kernel.shape[2], layer.filters, 3, dtype=torch.float64,
                                 padding="same" if layer.padding == "same" else 0)
                conv.weight.data, conv.bias.data = kernel.permute(3, 2, 0, 1).contiguous(), bias
                self.convolutions.append(conv)
            kernel, bias = (torch.from_numpy(w.copy()) for w in dense.get_weights())
            self.dense = nn.Linear(*kernel.shape, dtype=torch.float64)
            self.dense.weight.data, self.dense.bias.data = kernel.T.contiguous(), bias

        def forward(self, x):
            first, second, third = self.convolutions
            pooled = nn.functional.max_pool2d(torch.relu(first(x.permute(0, 3, 1, 2))), 2)
            block = torch.relu(third(torch.relu(second(pooled)))) + pooled
            joined = torch.cat([block.permute(0, 2, 3, 1).flatten(1),  # channels-last order
                                pooled.permute(0, 2, 3, 1).flatten(1)], dim=1)
            return self.dense(joined)  # its softmax is in the loss

    return ResNet()


def torch_network(torch, model: dnn.Sequential):
    """The PyTorch network of ``model``'s layers with its weights; images channels-last in
    and out of every layer, so that Flatten orders features as dnn does."""
    nn = torch.nn

    class ChannelsLast(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    modules = []
    for layer in model.layers:
        weights = [torch.from_numpy(weight.copy()) for weight in layer.get_weights()]
        if isinstance(layer, Conv2D):
            conv = nn.Conv2d(weights[0].shape[2], layer.filters, layer.kernel_size,
                             padding="same" if layer.padding == "same" else 0,
                             dtype=torch.float64)
            conv.weight.data = weights[0].permute(3, 2, 0, 1).contiguous()
            conv.bias.data = weights[1]
            modules += [ChannelsLast(conv)] + ([nn.ReLU()] if layer.activation.name == "relu"
                                               else [])
        elif isinstance(layer, MaxPooling2D):
            modules.append(ChannelsLast(nn.MaxPool2d(layer.pool_size)))
        elif isinstance(layer, AveragePooling2D):
            modules.append(ChannelsLast(nn.AvgPool2d(layer.pool_size)))
        elif isinstance(layer, BatchNormalization):
            norm = nn.BatchNorm2d(weights[0].shape[0], eps=layer.epsilon,
                                  momentum=1 - layer.momentum, dtype=torch.float64)
            norm.weight.data, norm.bias.data = weights[0], weights[1]
            modules.append(ChannelsLast(norm))
        elif isinstance(layer, Activation):
            modules.append(nn.ReLU())
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, Dense):  # its softmax is in the loss
            dense = nn.Linear(*weights[0].shape, dtype=torch.float64)
            dense.weight.data, dense.bias.data = weights[0].T.contiguous(), weights[1]
            modules.append(dense)
    return nn.Sequential(*modules)


def torch_weights(network, steps: int, rows: int) -> list[np.ndarray]:
    """The network's weights in dnn's order and layouts after ``steps`` steps of ``rows``
    values per channel: the running variance as the moving one Keras keeps, which moves
    towards each batch's biased variance, ``(rows - 1) / rows`` of PyTorch's unbiased one."""
    import torch

    found = []
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            found += [module.weight.detach().permute(2, 3, 1, 0), module.bias.detach()]
        elif isinstance(module, torch.nn.Linear):
            found += [module.weight.detach().T, module.bias.detach()]
        elif isinstance(module, torch.nn.BatchNorm2d):
            share, start = (rows - 1) / rows, (1 - module.momentum) ** steps  # start: 1s
            found += [module.weight.detach(), module.bias.detach(), module.running_mean,
                      module.running_var * share + start * (1 - share)]
    return [weight.numpy() for weight in found]


def compare(name: str, steps: int, batch: int) -> dict:
    import torch

    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 28, 28, 1))
    # something to learn: the brightest of ten bands of rows
    y = to_categorical(np.argmax(x[:, :20].reshape(-1, 10, 56).mean(axis=2), axis=1), 10)
    model = dnn_network(name)
    network = (torch_resnet if name == "resnet" else torch_network)(torch, model)
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    ours, theirs = [], []
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        ours.append(float(model.train_on_batch(x[rows], y[rows])))
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x[rows])),
                                                 torch.from_numpy(y[rows]))
        loss.backward()
        optimizer.step()
        theirs.append(loss.item())
    losses = np.abs(np.subtract(ours, theirs)) / np.abs(theirs)
    # relative to each weight's largest value, or 1e-3: the bias of a convolution before
    # BatchNormalization has a gradient of zero and stays at rounding noise
    weights = [float(np.max(np.abs(mine - other)) / max(np.max(np.abs(other)), 1e-3))
               for mine, other in zip(model.get_weights(),
                                      torch_weights(network, steps, batch * 13 * 13),
                                      strict=True)]
    window = min(5, steps)  # a batch's loss is noisy: the mean of the first and last five
    return {"steps": steps, "batch": batch, "loss_first": float(np.mean(theirs[:window])),
            "loss_last": float(np.mean(theirs[-window:])),
            "max_relative_loss_difference": float(np.max(losses)),
            "max_relative_weight_difference": max(weights)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="3 steps of 8 images: checks the script works")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: nothing to compare with (pip install torch)")
        return 0
    steps, batch = (3, 8) if args.quick else (args.steps, args.batch)
    torch.manual_seed(0)
    results = {name: compare(name, steps, batch)
               for name in ("convnet", "convnet-bn", "resnet")}
    worst = 0.0
    for name, result in results.items():
        print(f"{name}: {steps} steps of {batch}, loss {result['loss_first']:.4f} -> "
              f"{result['loss_last']:.4f}; largest relative difference from PyTorch "
              f"{torch.__version__}: loss {result['max_relative_loss_difference']:.1e}, "
              f"weights {result['max_relative_weight_difference']:.1e}")
        worst = max(worst, result["max_relative_loss_difference"],
                    result["max_relative_weight_difference"])
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"torch": torch.__version__, "networks": results}, file, indent=1)
    if worst > args.tolerance:
        print(f"convnet_vs_torch: differences above {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
