#!/usr/bin/env python
"""GPU benchmark, in one run: dnn ``--backend gpu`` (its training step replayed from a CUDA
graph, and with ``DNN_GPU_GRAPHS=0``) next to PyTorch CUDA eager and PyTorch with its whole step
captured in a CUDA graph, on the seed network (784-512-10, batch 128) and a wide one
(784-4096-4096-10, batch 1024), with one-hot and integer labels.

For each: the median epoch after the first (device-synchronised), the first epoch's extra time
over that median (the capture's cost, for the graphs), and the test accuracy after the epochs.

    python scripts/bench_gpu.py --data-dir ../shared/data/mnist [--epochs 5] [--json out.json]

``--quick`` checks that the script works, in seconds: two epochs (the first one's overhead
needs a second) of the seed network on the first 512 training and test images.  Where the gpu
backend cannot run it says why and exits with status 0 (1 without ``--quick``); on the CuPy
stand-in of tests/standin (docs/contributing.md) it runs on the CPU, its figures meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import dnn
from bench import QUICK_ROWS, add_quick_option, load_mnist
from dnn.backends.gpu import GpuBackend
from dnn.layers import Dense
from dnn.utils import to_categorical

NETWORKS = {"seed": ((512,), 128), "wide": ((4096, 4096), 1024)}  # hidden units, batch size


def summary(seconds: list, accuracy: float) -> dict:
    """Median epoch after the first, the first epoch's overhead over it, and the accuracy."""
    median = statistics.median(seconds[1:])
    return {"median_epoch_s": median, "first_epoch_overhead_s": seconds[0] - median,
            "epochs_s": seconds, "test_accuracy": accuracy}


def dnn_run(data, hidden, batch, labels: str, epochs: int, graphs: bool) -> dict:
    """dnn on the gpu backend: ``fit`` of ``epochs`` epochs, whose ``seconds`` run from the
    data on the device to the epoch's loss read back (a synchronisation)."""
    (x, y), (x_test, y_test) = data
    os.environ["DNN_GPU_GRAPHS"] = "1" if graphs else "0"
    model = dnn.Sequential([Dense(units, activation="relu") for units in hidden]
                           + [Dense(10, activation="softmax")], seed=0, backend="gpu")
    sparse = labels == "integer"
    model.compile(optimizer="rmsprop", metrics=["accuracy"], loss="sparse_categorical_crossentropy"
                  if sparse else "categorical_crossentropy")
    targets = (lambda t: t) if sparse else (lambda t: to_categorical(t, 10))
    seconds = model.fit(x, targets(y), epochs=epochs, batch_size=batch, verbose=0).seconds
    return summary(seconds, model.evaluate(x_test, targets(y_test), verbose=0)[1])


def torch_run(data, hidden, batch, epochs: int, graph: bool) -> dict:
    """PyTorch CUDA, the data on the device, the loss read once an epoch; with ``graph`` the
    whole step (forward, backward, a capturable RMSprop step) in one CUDA graph, replayed per
    full batch after copying its rows into static inputs."""
    import torch

    (x, y), (x_test, y_test) = data
    device = torch.device("cuda")
    torch.manual_seed(0)
    sizes = [784, *hidden, 10]
    layers = []
    for inputs, outputs in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(inputs, outputs), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).to(device)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7,
                                    capturable=graph)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_d, y_d = torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.int64)).to(device)
    static_x, static_y = x_d[:batch].clone(), y_d[:batch].clone()
    total = torch.zeros((), device=device)

    def step(inputs, targets):
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(net(inputs), targets)
        loss.backward()
        optimizer.step()
        total.add_(loss.detach() * len(targets))

    replay = None
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up, as torch.cuda.graph asks
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            step(static_x, static_y)
        replay = cuda_graph.replay
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        total.zero_()
        order = torch.randperm(len(x_d), device=device, generator=generator)
        for start in range(0, len(x_d), batch):
            index = order[start:start + batch]
            if replay is not None and len(index) == batch:
                static_x.copy_(x_d[index])
                static_y.copy_(y_d[index])
                replay()
            else:
                step(x_d[index], y_d[index])
        float(total)
        seconds.append(time.perf_counter() - started)
    with torch.no_grad():
        predicted = net(torch.from_numpy(x_test).to(device)).argmax(1).cpu().numpy()
    return summary(seconds, float((predicted == y_test).mean()))


def device_info() -> dict:
    """The device's name and CuPy's and the CUDA runtime's versions; on the stand-in of
    tests/standin, which has no device properties, a device named as that."""
    import cupy

    runtime = cupy.cuda.runtime
    if not hasattr(runtime, "getDeviceProperties"):
        return {"device": "none: the CuPy stand-in of tests/standin", "cupy": "stand-in",
                "cuda_runtime": runtime.runtimeGetVersion()}
    return {"device": runtime.getDeviceProperties(0)["name"].decode(),
            "cupy": cupy.__version__, "cuda_runtime": runtime.runtimeGetVersion()}


def torch_version():
    """PyTorch's version, or None when it is not installed or cannot reach a CUDA device (a
    CPU-only build, say): its runs are then left out."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__ if torch.cuda.is_available() else None


def network_runs(data, hidden, batch, epochs: int, with_torch: bool) -> dict:
    """Every system's run on one network: dnn replayed (both label forms) and eager, and
    PyTorch eager and captured when installed."""
    runs = {f"dnn graph {labels}": dnn_run(data, hidden, batch, labels, epochs, True)
            for labels in ("one-hot", "integer")}
    runs["dnn eager one-hot"] = dnn_run(data, hidden, batch, "one-hot", epochs, False)
    if with_torch:
        runs["torch eager"] = torch_run(data, hidden, batch, epochs, graph=False)
        runs["torch graph"] = torch_run(data, hidden, batch, epochs, graph=True)
    return runs


def print_runs(network: str, runs: dict) -> None:
    """One line per run: median epoch, the first epoch's overhead, test accuracy."""
    for name, run in runs.items():
        print(f"{network:5s} {name:20s} {run['median_epoch_s']:.4f} s/epoch, first epoch "
              f"+{run['first_epoch_overhead_s']:.3f} s, test accuracy "
              f"{run['test_accuracy']:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", dest="json_path")
    add_quick_option(parser)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more: the first epoch is reported apart")
    availability = GpuBackend.is_available()
    if not availability:
        print(f"bench_gpu: {'skipped: ' if args.quick else ''}gpu backend unavailable: "
              f"{availability.reason}", file=sys.stderr)
        sys.exit(0 if args.quick else 1)
    epochs, networks = (2, ["seed"]) if args.quick else (args.epochs, list(NETWORKS))
    data = load_mnist(args.data_dir, QUICK_ROWS if args.quick else None)
    result = {**device_info(), "torch": torch_version(), "epochs": epochs, "runs": {}}
    for network in networks:
        hidden, batch = NETWORKS[network]
        runs = result["runs"][network] = network_runs(data, hidden, batch, epochs,
                                                      result["torch"] is not None)
        print_runs(network, runs)
    print(json.dumps(result, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
