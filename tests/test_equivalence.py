"""The cross-backend equivalence suite, and proof that it still bites.

Every backend but cpu (the gpu backend's code runs here too, with its CUDA kernels compiled for
the host) is held to the cpu backend three ways by :mod:`dnn.testing`: each kernel and each
layer from identical inputs to rounding, and the seed network's training step by step in its
losses and, per parameter, in aggregate.  The second half of this file runs the same checks on
a correct backend that flips relu at its kink far more often than other hardware would (they
must pass) and on backends with planted errors (each check must fail).
"""

import dataclasses

import numpy as np
import pytest

import dnn
from dnn import backends, testing
from dnn.layers import Dense
from dnn.testing import assert_matches_cpu
from dnn.utils import to_categorical
from tests.conftest import GenericNumpy

DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_match_cpu(other_backend, dtype):
    testing.assert_kernels_match_cpu(other_backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_and_losses_match_cpu(other_backend, dtype):
    testing.assert_layers_match_cpu(other_backend, dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NaN and inf logits, on purpose
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_crossentropy_of_awkward_logits_matches_cpu(other_backend, dtype):
    """Ties, a NaN logit, an infinite one and logits far from zero, NaN where cpu has NaN."""
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(8, 5)).astype(dtype)
    logits[0] = 1.0
    logits[1, 2] = np.nan
    logits[2, 3] = np.inf
    logits[3] += 1e4
    targets = to_categorical(rng.integers(0, 5, size=8), 5, dtype)
    cpu = backends.get_backend("cpu")
    cpu_grad, our_grad = np.empty_like(logits), other_backend.empty(logits.shape, dtype)
    cpu_sum = cpu.softmax_crossentropy(logits.copy(), targets, cpu_grad)
    our_sum = other_backend.softmax_crossentropy(other_backend.asarray(logits),
                                                 other_backend.asarray(targets), our_grad)
    assert np.isnan(cpu_grad[1]).all() and np.isfinite(cpu_grad[3]).all()
    assert_matches_cpu(other_backend, "softmax_crossentropy loss", our_sum, cpu_sum, dtype)
    assert_matches_cpu(other_backend, "softmax_crossentropy grad", our_grad, cpu_grad, dtype)


@pytest.mark.parametrize("targets_as", ["one-hot", "labels"])
def test_correct_count_matches_cpu(other_backend, targets_as):
    """numpy.argmax's rule on every backend: ties go to the first index, NaN wins."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, size=64)
    output = rng.normal(size=(64, 5)).astype("float32") + 3 * to_categorical(labels, 5)
    output[:6] = 1.0  # ties
    output[6:10, 3] = np.nan
    targets = labels if targets_as == "labels" else to_categorical(labels, 5)
    expected = int(backends.get_backend("cpu").correct_count(output, targets))
    ours = other_backend.correct_count(other_backend.asarray(output),
                                       other_backend.asarray(targets))
    assert 30 < expected < 64
    assert int(other_backend.to_numpy(ours)) == expected


def seed_network_run(backend) -> testing.TrainingRun:
    """784-512-10, relu/softmax, RMSprop, batch 128, seed 0: 8 steps on MNIST-like data
    (mostly zeros, the rest in [0, 1], and edge pixels zero in every image, which the cpu
    backend leaves out of its products)."""
    rng = np.random.default_rng(3)
    x = rng.random((512, 784), dtype=np.float32) * (rng.random((512, 784)) < 0.2)
    x[:, :150] = x[:, -150:] = 0.0
    y = to_categorical(rng.integers(0, 10, size=512), 10)
    model = dnn.Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")],
                           seed=0, backend=backend)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    return testing.record_training(model, x, y, epochs=2, batch_size=128)


def test_seed_network_trains_alike_step_by_step(other_backend):
    """The same step losses and, in aggregate, the same weights as on cpu (why in aggregate:
    :mod:`dnn.testing`, and the kink test below)."""
    testing.assert_training_matches("seed network", seed_network_run(backends.get_backend("cpu")),
                                    seed_network_run(other_backend), "float32")


# -- the checks against a correct backend that differs at relu's kink, and planted errors ----
class KinkFlipping(GenericNumpy):
    """A correct backend whose hidden pre-activations within ``margin`` of 0 come out with a
    random sign, as another order of summation may round them: some 100 times more flips
    than float32 rounding causes in the seed network (``margin`` 1e-4)."""

    name = "kink-flipping"

    def __init__(self, margin=1e-4):
        self.margin = margin
        self.flips = 0
        self._rng = np.random.default_rng(0)

    def dense_relu_forward(self, x, kernel, bias, out, columns=None):
        z = self.dense_forward(x, kernel, bias, out, columns)
        near = np.abs(z) < self.margin
        self.flips += int(near.sum())
        signs = self._rng.choice(np.array([-1, 1], z.dtype), size=int(near.sum()))
        z[near] = signs * np.maximum(np.abs(z[near]), np.finfo(z.dtype).tiny)
        return self.relu(z)


class WrongSign(GenericNumpy):
    """The bias gradient with the wrong sign."""

    name = "wrong-sign"

    def dense_backward(self, x, grad_z, kernel, grad_kernel, grad_bias, grad_x=None,
                       columns=None):
        super().dense_backward(x, grad_z, kernel, grad_kernel, grad_bias, grad_x, columns)
        grad_bias *= -1


class MissingOneOverN(GenericNumpy):
    """The softmax cross-entropy gradient of the batch's sum, not of its mean."""

    name = "missing-1/n"

    def softmax_crossentropy(self, logits, targets, grad):
        loss_sum = super().softmax_crossentropy(logits, targets, grad)
        grad *= logits.shape[0]
        return loss_sum


class EpsilonOutsideTheRoot(GenericNumpy):
    """A fused RMSprop kernel computing ``lr*g / (sqrt(ms) + eps)`` (Adam's form) instead of
    Keras' ``lr*g / sqrt(ms + eps)``."""

    name = "epsilon-outside"

    def fused_update(self, name):
        return self._rmsprop if name == "rmsprop" else None

    @staticmethod
    def _rmsprop(param, grad, mean_square, mean_grad, momentum_buffer, learning_rate, rho,
                 momentum, epsilon):
        mean_square *= rho
        mean_square += (1 - rho) * (grad * grad)
        param -= (learning_rate * grad) / (np.sqrt(mean_square) + epsilon)
        return True


class FreshOutput(GenericNumpy):
    """A dense forward kernel that returns a new array of the right values instead of writing
    into the layer's: a step built on it cannot be replayed from fixed buffers."""

    name = "fresh-output"

    def dense_forward(self, x, kernel, bias, out, columns=None):
        return np.matmul(x, kernel) + bias


class LastMaxWins(GenericNumpy):
    """Max pooling that routes a tie to the last input holding the maximum, not the first."""

    name = "last-max-wins"

    def max_pool(self, x, window, out, argmax):
        flipped = self.im2col(x, window, np.empty((x.shape[0], *window.output, *window.kernel,
                                                    x.shape[-1]), x.dtype), fill=-np.inf)
        flat = flipped.reshape(*flipped.shape[:3], -1, x.shape[-1])[:, :, :, ::-1]
        argmax[...] = window.cells - 1 - np.argmax(flat, axis=3)
        out[...] = flat.max(axis=3)
        return out


class ShiftedWindows(GenericNumpy):
    """im2col that pads "same" windows after the image instead of splitting the padding."""

    name = "shifted-windows"

    def im2col(self, x, window, cols, fill=0.0):
        rows, columns = (dataclasses.replace(axis, pad_before=0)
                         for axis in (window.rows, window.columns))
        return super().im2col(x, dataclasses.replace(window, rows=rows, columns=columns),
                              cols, fill)


class LastOffsetLost(GenericNumpy):
    """col2im that drops what the last window offset read: overlapping windows' gradients
    come out short."""

    name = "last-offset-lost"

    def col2im(self, grad_cols, window, grad_x):
        kept = grad_cols.copy()
        kept[:, :, :, -1, -1, :] = 0
        return super().col2im(kept, window, grad_x)


class UncenteredSquares(GenericNumpy):
    """Sums of squares per channel about 0, not about the mean given: batch normalization's
    variance too large by the mean's square."""

    name = "uncentered-squares"

    def channel_sums(self, x, out, mean=None):
        return super().channel_sums(x if mean is None else x * x, out)


class LastRowLost(GenericNumpy):
    """Gradient sums per channel that leave out the batch's last row, as a sum in chunks
    that drops the rows past the last whole chunk would."""

    name = "last-row-lost"

    def channel_gradient_sums(self, grad, normalized, out):
        return super().channel_gradient_sums(grad[:-1], normalized[:-1], out)


class RepeatsOverwrite(GenericNumpy):
    """A scatter of Embedding's gradient rows that writes where it should add: of the rows an
    index names several times, the last alone is kept."""

    name = "repeats-overwrite"

    def scatter_add_rows(self, rows, indices, out):
        out[indices] = out[indices] + rows
        return out


PLANTED = [WrongSign, MissingOneOverN, EpsilonOutsideTheRoot]


def seed_network_check(backend):
    testing.assert_training_matches("seed network", seed_network_run(backends.get_backend("cpu")),
                                    seed_network_run(backend), "float32")


TRAINING_FAILURE = r"step losses differ|weight \d ended"
CHECKS = {  # the rewritten checks, and what each says about the planted errors it must catch
    "kernels": (lambda b: testing.assert_kernels_match_cpu(b, "float32"), {
        WrongSign: "kernel dense_backward grad_bias", MissingOneOverN:
        "kernel softmax_crossentropy grad", EpsilonOutsideTheRoot: "RMSprop update: param",
        FreshOutput: "kernel dense_forward on fresh-output returned another array than the out",
        LastMaxWins: r"kernel max_pool_backward \(2, 2\) valid", ShiftedWindows:
        r"kernel im2col \(3, 2\) same", LastOffsetLost: r"kernel col2im \(2, 2\) valid",
        UncenteredSquares: "kernel channel_sums about a mean of 126 rows",
        LastRowLost: "kernel channel_gradient_sums of 126 rows",
        RepeatsOverwrite: "kernel scatter_add_rows"}),
    "layers": (lambda b: testing.assert_layers_match_cpu(b, "float32"), {  # no optimizer here
        WrongSign: "Dense linear grad_bias", MissingOneOverN: "from logits gradient",
        LastMaxWins: "MaxPooling2D grad_x", ShiftedWindows: "Conv2D inference",
        LastOffsetLost: "Conv2D grad_x", UncenteredSquares: "BatchNormalization inference",
        LastRowLost: "BatchNormalization grad_x", RepeatsOverwrite: "Embedding weight 0"}),
    # The toy network's gradients are too large for epsilon's place to show; the seed
    # network's sparse pixels give the small ones where it does.
    "toy training": (lambda b: testing.assert_training_matches_cpu(b, "float32"), {
        WrongSign: TRAINING_FAILURE, MissingOneOverN: TRAINING_FAILURE}),
    "seed network training": (seed_network_check, {
        planted: TRAINING_FAILURE for planted in PLANTED}),
}


@pytest.mark.parametrize("check, planted", [
    pytest.param(check, planted, id=f"{check}-{planted.name}")
    for check, (_, catches) in CHECKS.items() for planted in catches])
def test_each_check_fails_on_a_planted_error(check, planted):
    run, catches = CHECKS[check]
    with pytest.raises(AssertionError, match=catches[planted]):
        run(planted())


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_each_check_passes_on_a_backend_that_flips_relu_kinks(check):
    kinky = KinkFlipping()
    CHECKS[check][0](kinky)
    if check == "seed network training":
        assert kinky.flips > 50


def test_flips_at_the_kink_do_break_an_elementwise_weight_comparison():
    """Why the training checks compare weights in aggregate: after a few kink flips, some
    weights of a correct backend stray beyond any elementwise float32 tolerance."""
    reference, kinky = seed_network_run(backends.get_backend("cpu")), KinkFlipping(1e-6)
    flipped = seed_network_run(kinky)
    assert 0 < kinky.flips < 20
    assert any(not np.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
               for ours, theirs in zip(flipped.end, reference.end))
    testing.assert_training_matches("seed network", reference, flipped, "float32")
