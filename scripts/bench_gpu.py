#!/usr/bin/env python
"""GPU benchmark: the seed network's steady-state epoch on ``--backend gpu`` next to PyTorch
CUDA running the same loop with the data on the device, in one run, after a warm-up, timed with
device synchronisation; plus both test accuracies.

    python scripts/bench_gpu.py --data-dir ../shared/data/mnist [--epochs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench import time_dnn_epoch, torch_train_epoch  # scripts/ is on sys.path when run

import dnn
from dnn.datasets import get
from dnn.layers import Dense
from dnn.utils import to_categorical


def dnn_run(x, y, x_test, y_test, epochs):
    backend = dnn.get_backend("gpu")
    model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=backend)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    # An epoch's "seconds" starts after fit has uploaded the data (as PyTorch's loop below finds
    # it on the device) and stops after the epoch's loss is read back: a sync.  The first epoch
    # compiles the kernels: a warm-up.
    times = [time_dnn_epoch(model, x, y) for _ in range(epochs + 1)]
    return times[1:], model.evaluate(x_test, y_test)[1]


def torch_run(x, labels, x_test, labels_test, epochs):
    import torch

    device = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10)).to(device)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_d = torch.from_numpy(x).to(device)
    y_d = torch.from_numpy(labels).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(epochs + 1):
        torch.cuda.synchronize()
        started = time.perf_counter()
        order = torch.randperm(len(x_d), device=device, generator=generator)
        torch_train_epoch(net, optimizer, loss_fn, x_d, y_d, order)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    with torch.no_grad():
        predicted = net(torch.from_numpy(x_test).to(device)).argmax(1).cpu().numpy()
    return times[1:], float((predicted == labels_test).mean()), torch.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DNN_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    (x, labels), (x_test, labels_test) = get("mnist").load(args.data_dir)
    x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    import cupy

    result = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
              "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}
    dnn_times, dnn_accuracy = dnn_run(x, to_categorical(labels), x_test,
                                      to_categorical(labels_test), args.epochs)
    result["dnn"] = {"median_epoch_s": statistics.median(dnn_times), "epochs_s": dnn_times,
                     "test_accuracy": dnn_accuracy}
    try:
        torch_times, torch_accuracy, version = torch_run(x, labels, x_test, labels_test,
                                                         args.epochs)
        result["torch"] = {"version": version, "median_epoch_s": statistics.median(torch_times),
                           "epochs_s": torch_times, "test_accuracy": torch_accuracy}
        result["dnn/torch"] = result["dnn"]["median_epoch_s"] / result["torch"]["median_epoch_s"]
    except ImportError:
        result["torch"] = None
    print(json.dumps(result, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
