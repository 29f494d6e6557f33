"""Weight initializers by Keras' names: each draws a host array of a shape from a seeded NumPy
Generator, so that one seed gives the same start on every backend.

For a kernel ``(fan_in, fan_out)``; a bias ``(units,)`` counts as ``fan_in = fan_out = units``;
a convolution kernel ``(kh, kw, in, out)`` has ``fan_in = kh * kw * in`` and ``fan_out = kh * kw *
out``, as Keras counts them.
"""

from __future__ import annotations

import math

import numpy as np

from dnn.errors import ArgumentTypeError, UsageError


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _truncated_normal(rng, shape, stddev) -> np.ndarray:
    """Normal values of ``stddev`` redrawn until within two of it, as Keras' truncated
    normal (whose ``stddev`` is that of the untruncated one, scaled by 1/0.8796)."""
    values = rng.normal(size=shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.normal(size=int(outside.sum()))
        outside = np.abs(values) > 2
    return values * stddev / 0.87962566103423978


def glorot_uniform(rng, shape):
    """U(-l, l) with ``l = sqrt(6 / (fan_in + fan_out))``: Keras' default for kernels."""
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(rng, shape):
    fan_in, fan_out = _fans(shape)
    return _truncated_normal(rng, shape, np.sqrt(2.0 / (fan_in + fan_out)))


def he_uniform(rng, shape):
    limit = np.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, size=shape)


def he_normal(rng, shape):
    """Truncated normal of stddev ``sqrt(2 / fan_in)``: for relu layers."""
    return _truncated_normal(rng, shape, np.sqrt(2.0 / _fans(shape)[0]))


def uniform(rng, shape):
    """U(-0.05, 0.05): Keras' ``"uniform"`` (``RandomUniform()``), Embedding's default."""
    return rng.uniform(-0.05, 0.05, size=shape)


def zeros(rng, shape):
    return np.zeros(shape)


def ones(rng, shape):
    return np.ones(shape)


INITIALIZERS = {function.__name__: function for function in
                (glorot_uniform, glorot_normal, he_uniform, he_normal, uniform, zeros, ones)}
INITIALIZERS["random_uniform"] = uniform


def check(name) -> str:
    """``name`` if it names an initializer; UsageError naming the known ones else."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"an initializer is named by a string, not "
                                f"{type(name).__name__}")
    if name not in INITIALIZERS:
        raise UsageError(f"unknown initializer {name!r}; known: {', '.join(INITIALIZERS)}")
    return name


def draw(name: str, rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """A host array of ``shape`` and ``dtype`` from initializer ``name``."""
    return INITIALIZERS[name](rng, tuple(shape)).astype(dtype)
