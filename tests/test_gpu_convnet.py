"""Keras' "Simple MNIST convnet", made small, trained through the whole gpu path on the CPU: the
real GpuBackend (its CUDA kernels compiled by the host C compiler), CudaGraphs and Cublas on the
stand-in of CuPy 14 and the stub cuBLAS (tests/test_gpu_standin.py).  Its trajectory is the cpu
backend's to float32 rounding; its step is captured and replayed as a CUDA graph, every replay
the eager step's to the bit; BatchNormalization's moving statistics, step state, advance in the
replays as in the eager steps."""

import warnings

import numpy as np
import pytest

import dnn
from dnn.backends.base import Backend
from dnn.backends.gpu import GpuBackend
from dnn.callbacks import Callback
from dnn.layers import (Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout,
                        Flatten, GlobalAveragePooling2D, Input, MaxPooling2D)
from dnn.trainers.step import GraphFallbackWarning, ReplayedStep
from dnn.utils import to_categorical
from tests import test_gpu_standin as standin
from tests.test_gpu_standin import assert_close_runs

# the stand-in's skips (no host C compiler, not Linux) and fixtures
pytestmark, site, cupy = standin.pytestmark, standin.site, standin.cupy

ROWS, BATCH, EPOCHS = 100, 16, 2  # six full batches an epoch and one of 4 rows
FULL_BATCHES = EPOCHS * (ROWS // BATCH)
# eager warm-ups before the capture: from an empty pool, then one that takes no new block
WARM_UPS = 2


def simple_mnist_convnet():
    """Keras' example (keras.io/examples/vision/mnist_convnet), on 12x12 images."""
    return [Input(shape=(12, 12, 1)), Conv2D(4, kernel_size=(3, 3), activation="relu"),
            MaxPooling2D(pool_size=(2, 2)),
            Conv2D(8, kernel_size=(3, 3), activation="relu", padding="same"),
            MaxPooling2D(pool_size=(2, 2)), Flatten(), Dropout(0.5),
            Dense(10, activation="softmax")]


def batch_normalized_convnet():
    """The same with BatchNormalization and average pooling: "same" windows that count only
    the image's cells, strides, and a global average instead of Flatten.  A convolution
    before a BatchNormalization has no bias, as usual: the normalization takes its mean away,
    leaving its gradient rounding noise, which Adam would scale up to full steps in directions
    that differ from backend to backend."""
    return [Input(shape=(12, 12, 1)), Conv2D(4, kernel_size=(3, 3), padding="same",
                                              use_bias=False),
            BatchNormalization(), Activation("relu"),
            AveragePooling2D(pool_size=(3, 3), strides=(2, 2), padding="same"),
            Conv2D(8, kernel_size=(3, 2), strides=(2, 1), use_bias=False),
            BatchNormalization(momentum=0.9), Activation("relu"),
            MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            GlobalAveragePooling2D(), Dense(10, activation="softmax")]


MODELS = {"simple-mnist-convnet": simple_mnist_convnet,
          "batch-normalized": batch_normalized_convnet}


class MovingStatistics(Callback):
    """The moving statistics of every BatchNormalization layer after each batch (host
    copies, read outside the step)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        backend = self.model.backend
        self.batches.append([backend.to_numpy(array) for layer in self.model.layers
                             if isinstance(layer, BatchNormalization)
                             for array in layer.state_weights])


def train(backend, model: str):
    """``(history, weights, moving statistics after each batch)`` of ``model`` trained with
    Adam on ``backend`` from seed 0."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 12, 12, 1)).astype(np.float32)
    y = to_categorical(rng.integers(0, 10, size=ROWS), 10)
    net = dnn.Sequential(MODELS[model](), seed=0, backend=backend)
    net.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    statistics = MovingStatistics()
    history = net.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                      callbacks=[statistics])
    return history.history, net.get_weights(), statistics.batches


# The generic kernels the gpu backend has its own of (dnn.backends.cuda_sources): the window
# kernels (dnn_<name>, in each model) and batch normalization's sums per channel (in the
# batch-normalized model).
WINDOW_KERNELS = ("im2col", "col2im", "max_pool", "max_pool_backward")
CHANNEL_KERNELS = {"channel_sums": ("dnn_chunk_sums", "dnn_chunk_squares", "dnn_sum_chunks"),
                   "channel_gradient_sums": ("dnn_chunk_gradient_sums", "dnn_sum_chunks")}


@pytest.fixture
def kernel_calls(monkeypatch):
    """The generic window kernels and sums per channel refused to the gpu backend (a run on
    it that takes one fails); gives a gpu backend's calls of its own kernels of them by
    ``dnn_*`` name, as the stand-in's compiled kernels count them (in eager steps and replays
    alike)."""
    def refusing(name):
        generic = getattr(Backend, name)

        def kernel(self, *args, **kwargs):
            if isinstance(self, GpuBackend):
                raise AssertionError(f"the generic {name} ran on the gpu backend")
            return generic(self, *args, **kwargs)
        return kernel

    for name in (*WINDOW_KERNELS, *CHANNEL_KERNELS):
        monkeypatch.setattr(Backend, name, refusing(name))

    def calls(backend) -> dict:
        names = {f"dnn_{name}" for name in WINDOW_KERNELS}.union(*CHANNEL_KERNELS.values())
        compiled = {name: backend._kernels[name]._host_kernel for name in names}
        return {name: 0 if kernel is None else kernel.calls for name, kernel in compiled.items()}
    return calls


class EagerGraph:
    """What ``GpuBackend.capture`` gives in the eager reference run: a "graph" whose replay
    runs the step eagerly with the kernels of a captured step (cuBLAS of our own, on the
    capture stream), so that the run is the captured run's, without a graph."""

    def __init__(self, backend, step):
        self.backend, self.step = backend, step

    def replay(self):
        with self.backend.graph_kernels():
            self.step()


def assert_same_run(ours, reference) -> None:
    """The same history, weights and moving statistics after each batch, to the bit."""
    assert ours[0] == reference[0]
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        assert (mine.dtype, mine.shape) == (theirs.dtype, theirs.shape)
        assert mine.tobytes() == theirs.tobytes()
    for mine, theirs in zip(ours[2], reference[2], strict=True):
        assert [array.tobytes() for array in mine] == [array.tobytes() for array in theirs]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_convnet_trains_on_the_gpu_path_as_on_the_cpu_backend(cupy, monkeypatch,
                                                                   kernel_calls, model):
    """Captured and replayed, and eager (``DNN_GPU_GRAPHS=0``: CuPy's products): the cpu
    backend's losses, weights and moving statistics after each batch, to float32 rounding;
    the gpu backend's own window kernels and sums per channel, never the generic ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        captured = train(backend := GpuBackend(), model)
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS  # but the warm-ups
    calls = kernel_calls(backend)
    assert all(calls[f"dnn_{name}"] for name in WINDOW_KERNELS)  # convolutions, max pooling
    if model == "batch-normalized":
        assert all(calls[name] for names in CHANNEL_KERNELS.values() for name in names)
    monkeypatch.setenv("DNN_GPU_GRAPHS", "0")
    eager = train(GpuBackend(), model)
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS
    reference = train("cpu", model)
    for run in (captured, eager):
        assert_close_runs(run[:2], reference[:2])
        for ours, theirs in zip(run[2], reference[2], strict=True):
            for mine, cpu in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(mine, cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_replay_of_the_convnet_is_the_eager_step_to_the_bit(cupy, monkeypatch,
                                                                  kernel_calls, model):
    """Every replay checked (not only the first two) against the eager step from the same
    state, every array of the step's state compared to the bit (weights, Adam's moments and
    step, Dropout's counter, the moving statistics, the totals): none differs, none falls
    back; and the whole run is the run of eager steps with the same kernels, to the bit."""
    monkeypatch.setattr(ReplayedStep, "CHECKED_REPLAYS", FULL_BATCHES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(GpuBackend(), model)
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS
    monkeypatch.setattr(GpuBackend, "capture", lambda gpu, step: EagerGraph(gpu, step))
    eager = train(GpuBackend(), model)
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS  # none more
    assert_same_run(replayed, eager)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_capture_of_the_convnet_allocates_nothing(cupy, monkeypatch, kernel_calls, model):
    """After its warm-ups, the capture finds every block it asks for in its pool: the window
    kernels', the partial sums per channel, Dropout's and the layers' temporaries; none of
    them outlives its step."""
    kept = standin.bytes_kept_from_graph_kernels(monkeypatch, cupy)
    train(GpuBackend(), model)
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS
    assert [malloc for malloc in cupy.cuda.memory.mallocs if malloc.capturing] == []
    assert len(kept) >= WARM_UPS + 1 and set(kept) == {0}


def test_the_moving_statistics_advance_in_every_replay_as_in_the_eager_steps(cupy, monkeypatch):
    """BatchNormalization's moving statistics are step state (``Layer.step_state``): each
    replay moves them on from where the step before left them, as an eager step does, to the
    bit, and after fit they are the model's weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphFallbackWarning)
        replayed = train(GpuBackend(), "batch-normalized")
    assert cupy.cuda.graph.launches == FULL_BATCHES - WARM_UPS
    monkeypatch.setattr(GpuBackend, "capture", lambda gpu, step: EagerGraph(gpu, step))
    eager = train(GpuBackend(), "batch-normalized")
    assert len(replayed[2]) == EPOCHS * -(-ROWS // BATCH)  # after every batch
    for before, after in zip(replayed[2], replayed[2][1:]):
        assert all(not np.array_equal(old, new) for old, new in zip(before, after, strict=True))
    for mine, theirs in zip(replayed[2], eager[2], strict=True):
        assert [array.tobytes() for array in mine] == [array.tobytes() for array in theirs]
    # get_weights: kernel; gamma, beta, moving mean, moving variance; kernel; gamma, beta,
    # moving mean, moving variance; kernel, bias
    assert [replayed[1][index].tobytes() for index in (3, 4, 8, 9)] == [
        array.tobytes() for array in replayed[2][-1]]
