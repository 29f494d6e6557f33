"""``array_api_compat.cupy``: CuPy's namespace with array-api-compat's wrappers over it.

What matters to dnn is kept as array-api-compat 1.16 writes it (``array_api_compat/cupy/
_aliases.py``: ``sign = get_xp(cp)(_aliases.sign)``, ``clip = get_xp(cp)(_aliases.clip)``, from
``array_api_compat/common/_aliases.py``): ``sign`` and ``clip`` are Python functions that end in
boolean-mask assignment (``out[xp.isnan(x)] = xp.nan``, ``out[ia] = a[ia]``), for which CuPy
reads the mask's count on the host, refused while a stream is being captured.  Every other name
is CuPy's own (``from cupy import *``), which is all the stand-in needs of the rest."""

import cupy as cp


def __getattr__(name):
    return getattr(cp, name)


def sign(x, /, **kwargs):
    """common/_aliases.py ``sign``, for real and complex ``x``."""
    if x.dtype.kind == "c":
        out = (x / cp.abs(x, **kwargs))[...]
        out[x == 0j] = 0j  # sign(0) = 0 but the above formula would give nan
    else:
        out = cp.sign(x, **kwargs)
    # CuPy sign() does not propagate nans (data-apis/array-api-compat#136)
    if x.dtype.kind == "f":
        out[cp.isnan(x)] = cp.nan
    return out[()]


def clip(x, /, min=None, max=None, *, out=None):
    """common/_aliases.py ``clip``: the result in ``x``'s dtype, NaN bounds propagated."""

    def shape(bound):
        return () if bound is None or isinstance(bound, (int, float)) else bound.shape

    result_shape = cp.broadcast_shapes(x.shape, shape(min), shape(max))
    if out is None:
        out = cp.empty(result_shape, dtype=x.dtype)
    out[()] = x
    if min is not None:
        a = cp.broadcast_to(cp.asarray(min, dtype=x.dtype), result_shape)
        ia = (out < a) | cp.isnan(a)
        out[ia] = a[ia]
    if max is not None:
        b = cp.broadcast_to(cp.asarray(max, dtype=x.dtype), result_shape)
        ib = (out > b) | cp.isnan(b)
        out[ib] = b[ib]
    return out[()]
