#!/usr/bin/env python
"""GPU benchmark, in one run: dnn ``--backend gpu`` (its training step replayed from a CUDA
graph, and with ``DNN_GPU_GRAPHS=0``) next to PyTorch CUDA eager and PyTorch with its whole step
captured in a CUDA graph, on the seed network (784-512-10, RMSprop, batch 128) and a wide one
(784-4096-4096-10, batch 1024), with one-hot and integer labels, and on Keras' "Simple MNIST
convnet" (Input (28, 28, 1) -> Conv2D 32 3x3 relu -> MaxPooling2D 2 -> Conv2D 64 3x3 relu ->
MaxPooling2D 2 -> Flatten -> Dropout 0.5 -> Dense 10 softmax; Adam, batch 128, one-hot labels),
on MNIST's images as (N, 28, 28, 1) float32 in [0, 1].

For each: the median epoch after the first (device-synchronised), the first epoch's extra time
over that median (the capture's cost, for the graphs), and the test accuracy after the epochs;
for each network with PyTorch, the ratios of dnn's replayed step (one-hot labels) to PyTorch
eager and to PyTorch's graph (the convnet's targets, from its issue: <= 0.5 and <= 1.0).

    python scripts/bench_gpu.py --data-dir ../shared/data/mnist [--epochs 5] [--json out.json]
        [--networks seed wide convnet]

PyTorch's convnet has the same Adam hyper-parameters (lr 1e-3, betas (0.9, 0.999), eps 1e-7;
Keras adds eps to the root of the second moment before its bias correction, PyTorch after it,
which does not matter for timing), cuDNN's autotuner on (``cudnn.benchmark``), in the memory
format (channels-last or NCHW) that ran its eager step faster in a warm-up.

``--quick`` checks that the script works, in seconds: two epochs (the first one's overhead
needs a second) of the seed network on the first 512 training and test images and of the
convnet on the first 72, batch 16 (unless ``--networks`` names others).  Where the gpu backend
cannot run it says why and exits with status 0 (1 without ``--quick``); on the CuPy stand-in of
tests/standin (docs/contributing.md) it runs on the CPU, its figures meaningless.
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
from bench import QUICK_ROWS, add_quick_option, load_mnist, write_json
from bench_convnet import IMAGE, dnn_model as convnet_model
from dnn.backends.gpu import GpuBackend
from dnn.layers import Dense
from dnn.utils import to_categorical

DENSE = {"seed": ((512,), 128), "wide": ((4096, 4096), 1024)}  # hidden units, batch size
CONVNET_BATCH = 128
NETWORKS = [*DENSE, "convnet"]
QUICK_NETWORKS = ["seed", "convnet"]
# --quick's convnet: images, batch size.  The stand-in's cuBLAS multiplies in plain loops, so a
# replayed step of 128 images takes it seconds; 72 images are four full batches of 16 and one
# of 8, a partial last batch as in a full epoch.
QUICK_CONVNET = (72, 16)
# dnn's runs of each network: (labels, replayed from a CUDA graph)
DNN_RUNS = {"dense": [("one-hot", True), ("integer", True), ("one-hot", False)],
            "convnet": [("one-hot", True), ("one-hot", False)]}
RATIOS = {"dnn graph / torch eager": ("dnn graph one-hot", "torch eager"),
          "dnn graph / torch graph": ("dnn graph one-hot", "torch graph")}
TARGETS = {"convnet": {"dnn graph / torch eager": 0.5, "dnn graph / torch graph": 1.0}}
FORMAT_WARMUP_STEPS = 20  # timed eager steps per memory format (after as many untimed)
EVALUATION_ROWS = 1000  # test images per forward pass in PyTorch's evaluation
TORCH_DEVICE = "cuda"  # where PyTorch runs (the tests run its eager runs on "cpu")


def summary(seconds: list, accuracy: float) -> dict:
    """Median epoch after the first, the first epoch's overhead over it, and the accuracy."""
    median = statistics.median(seconds[1:])
    return {"median_epoch_s": median, "first_epoch_overhead_s": seconds[0] - median,
            "epochs_s": seconds, "test_accuracy": accuracy}


def inputs_of(network: str, images: np.ndarray) -> np.ndarray:
    """The images as the network takes them: flat for the dense ones, (N, 28, 28, 1) for the
    convnet (a view)."""
    return images.reshape(len(images), *IMAGE) if network == "convnet" else images


def dnn_run(data, network: str, batch: int, labels: str, epochs: int, graphs: bool) -> dict:
    """dnn on the gpu backend: ``fit`` of ``epochs`` epochs, whose ``seconds`` run from the
    data on the device to the epoch's loss read back (a synchronisation)."""
    (x, y), (x_test, y_test) = data
    os.environ["DNN_GPU_GRAPHS"] = "1" if graphs else "0"
    sparse = labels == "integer"
    if network == "convnet":  # Keras' example, compiled as it compiles it (Adam)
        assert not sparse, "the convnet runs with one-hot labels, as Keras' example"
        model = convnet_model(seed=0, backend="gpu")
    else:
        model = dnn.Sequential([Dense(units, activation="relu") for units in DENSE[network][0]]
                               + [Dense(10, activation="softmax")], seed=0, backend="gpu")
        model.compile(optimizer="rmsprop", metrics=["accuracy"],
                      loss="sparse_categorical_crossentropy" if sparse
                      else "categorical_crossentropy")
    targets = (lambda t: t) if sparse else (lambda t: to_categorical(t, 10))
    seconds = model.fit(inputs_of(network, x), targets(y), epochs=epochs,
                        batch_size=batch, verbose=0).seconds
    return summary(seconds, model.evaluate(inputs_of(network, x_test), targets(y_test),
                                           verbose=0)[1])


def torch_network(network: str, graph: bool, memory_format=None):
    """``(net, optimizer)`` on the device: the dense networks with RMSprop as Keras' (rho 0.9,
    eps 1e-7), the convnet (its weights in ``memory_format``) with Adam as Keras' (lr 1e-3,
    betas (0.9, 0.999), eps 1e-7); the optimizer capturable for a ``graph``."""
    import torch

    device = torch.device(TORCH_DEVICE)
    torch.manual_seed(0)
    if network == "convnet":
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(64 * 5 * 5, 10))
        net = net.to(device, memory_format=memory_format)
        return net, torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7,
                                     capturable=graph)
    sizes = [784, *DENSE[network][0], 10]
    layers = []
    for inputs, outputs in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(inputs, outputs), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).to(device)
    return net, torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7,
                                    capturable=graph)


def torch_inputs(network: str, images: np.ndarray, memory_format=None):
    """The images on the device as PyTorch's network takes them: flat, or (N, 1, 28, 28) in
    ``memory_format`` (one channel: the same bytes as (N, 28, 28, 1))."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(TORCH_DEVICE)
    if network != "convnet":
        return tensor
    return tensor.reshape(len(images), 1, *IMAGE[:2]).contiguous(memory_format=memory_format)


def torch_run(data, network: str, batch: int, epochs: int, graph: bool,
              memory_format=None) -> dict:
    """PyTorch CUDA, the data on the device, the loss read once an epoch; with ``graph`` the
    whole step (forward, backward, a capturable optimizer's step) in one CUDA graph, replayed
    per full batch after copying its rows into static inputs."""
    import torch

    (x, y), (x_test, y_test) = data
    device = torch.device(TORCH_DEVICE)
    net, optimizer = torch_network(network, graph, memory_format)
    net.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    x_d = torch_inputs(network, x, memory_format)
    y_d = torch.from_numpy(y.astype(np.int64)).to(device)
    layout = {} if memory_format is None else {"memory_format": memory_format}
    static_x, static_y = x_d[:batch].clone(**layout), y_d[:batch].clone()
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
        synchronize(torch)
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
                step(x_d[index].contiguous(**layout), y_d[index])
        float(total)
        seconds.append(time.perf_counter() - started)
    net.eval()
    x_test_d = torch_inputs(network, x_test, memory_format)
    with torch.no_grad():
        predicted = torch.cat([net(x_test_d[start:start + EVALUATION_ROWS]).argmax(1)
                               for start in range(0, len(x_test_d), EVALUATION_ROWS)])
    return summary(seconds, float((predicted.cpu().numpy() == y_test).mean()))


def torch_convnet_format(x, batch: int, steps: int) -> dict:
    """The convnet's eager step in PyTorch, channels-last and NCHW, on the first ``batch``
    images of ``x``: ``{"memory_format": the faster one's name, "warmup_step_ms": {name: ms
    a step}}``, each timed over ``steps`` steps after as many untimed (cuDNN's autotuning)."""
    import torch

    timings = {}
    for name, memory_format in torch_formats().items():
        net, optimizer = torch_network("convnet", False, memory_format)
        loss_fn = torch.nn.CrossEntropyLoss()
        images = torch_inputs("convnet", x[:batch], memory_format)
        targets = torch.zeros(len(images), dtype=torch.int64, device=TORCH_DEVICE)

        def run():
            synchronize(torch)
            started = time.perf_counter()
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=False)
                loss_fn(net(images), targets).backward()
                optimizer.step()
            synchronize(torch)
            return time.perf_counter() - started

        run()
        timings[name] = run() / steps * 1e3
    return {"memory_format": min(timings, key=timings.get), "warmup_step_ms": timings}


def torch_formats() -> dict:
    """PyTorch's two memory formats for the convnet, by name."""
    import torch

    return {"channels-last": torch.channels_last, "NCHW": torch.contiguous_format}


def synchronize(torch) -> None:
    """Wait for PyTorch's device (nothing to wait for on the CPU)."""
    if torch.device(TORCH_DEVICE).type == "cuda":
        torch.cuda.synchronize()


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


def network_runs(data, network: str, batch: int, epochs: int, with_torch: bool,
                 quick: bool) -> dict:
    """Every system's run on one network: dnn replayed (both label forms for the dense ones)
    and eager, and PyTorch eager and captured when installed; PyTorch's convnet runs in the
    memory format its warm-up found faster (each of its runs names it, with the warm-up's
    figures)."""
    runs = {f"dnn {'graph' if graphs else 'eager'} {labels}":
            dnn_run(data, network, batch, labels, epochs, graphs)
            for labels, graphs in DNN_RUNS["convnet" if network == "convnet" else "dense"]}
    if with_torch:
        memory_format, notes = None, {}
        if network == "convnet":
            import torch

            torch.backends.cudnn.benchmark = True
            notes = torch_convnet_format(data[0][0], batch,
                                         2 if quick else FORMAT_WARMUP_STEPS)
            memory_format = torch_formats()[notes["memory_format"]]
            notes["cudnn_benchmark"] = True
        for name, graph in (("torch eager", False), ("torch graph", True)):
            runs[name] = {**torch_run(data, network, batch, epochs, graph, memory_format),
                          **notes}
    return runs


def ratios_of(runs: dict) -> dict:
    """dnn's replayed step over PyTorch's, eager and captured: median epochs' ratios."""
    return {name: runs[ours]["median_epoch_s"] / runs[theirs]["median_epoch_s"]
            for name, (ours, theirs) in RATIOS.items() if ours in runs and theirs in runs}


def print_runs(network: str, runs: dict, ratios: dict) -> None:
    """One line per run: median epoch, the first epoch's overhead, test accuracy; then one
    per ratio, with its target where the network has one."""
    for name, run in runs.items():
        print(f"{network:7s} {name:20s} {run['median_epoch_s']:.4f} s/epoch, first epoch "
              f"{run['first_epoch_overhead_s']:+.3f} s, test accuracy "
              f"{run['test_accuracy']:.4f}"
              + (f", {run['memory_format']}" if "memory_format" in run else ""))
    for name, ratio in ratios.items():
        target = TARGETS.get(network, {}).get(name)
        print(f"{network:7s} {name} {ratio:.3f}"
              + ("" if target is None else f" (target <= {target}: "
                                           f"{'met' if ratio <= target else 'not met'})"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, metavar="NETWORK",
                        help=f"the networks to run, of {', '.join(NETWORKS)} (default: all; "
                             f"with --quick: {', '.join(QUICK_NETWORKS)})")
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
    epochs = 2 if args.quick else args.epochs
    networks = list(dict.fromkeys(args.networks or (QUICK_NETWORKS if args.quick
                                                    else NETWORKS)))
    data = load_mnist(args.data_dir, QUICK_ROWS if args.quick else None)
    result = {**device_info(), "torch": torch_version(), "epochs": epochs, "networks": {},
              "runs": {}, "ratios": {}, "targets": TARGETS}
    for network in networks:
        rows, batch = (None, CONVNET_BATCH if network == "convnet" else DENSE[network][1])
        if args.quick and network == "convnet":
            rows, batch = QUICK_CONVNET
        subset = tuple((x[:rows], y[:rows]) for x, y in data)
        result["networks"][network] = {"batch": batch, "training_images": len(subset[0][0]),
                                       "test_images": len(subset[1][0])}
        runs = result["runs"][network] = network_runs(subset, network, batch, epochs,
                                                      result["torch"] is not None, args.quick)
        ratios = result["ratios"][network] = ratios_of(runs)
        print_runs(network, runs, ratios)
    print(json.dumps(result, indent=2))
    if args.json_path:
        write_json(args.json_path, result)


if __name__ == "__main__":
    main()
