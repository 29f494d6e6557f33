"""Keras' arithmetic on what describes a functional model: ``x + y``, ``x - y`` and ``x * y`` of
two layer outputs (or a ``keras.Input``) make the merge layer that computes it (``Add``,
``Subtract``, ``Multiply``), called on both, where Keras 3 records an operation; anything else
(a number, an array, a slice) is refused in one line.  Shared by ``keras.Input`` and
:class:`dnn.models.functional.SymbolicTensor`."""

from __future__ import annotations

from dnn.errors import UsageError


class MergedByOperators:
    """``+``, ``-`` and ``*`` as merge layers (module docstring), the other arithmetic and
    slicing refused; ``name`` names the operand in errors.  NumPy defers to these
    (``__array_ufunc__`` None), so ``array + x`` is refused here too."""

    __array_ufunc__ = None
    __iter__ = None  # not iterated through __getitem__'s refusal: a TypeError, as before

    def __add__(self, other):
        return _merged("Add", "+", self, other)

    def __radd__(self, other):
        return _merged("Add", "+", other, self)

    def __sub__(self, other):
        return _merged("Subtract", "-", self, other)

    def __rsub__(self, other):
        return _merged("Subtract", "-", other, self)

    def __mul__(self, other):
        return _merged("Multiply", "*", self, other)

    def __rmul__(self, other):
        return _merged("Multiply", "*", other, self)

    def __getitem__(self, index):
        raise UsageError(f"{self.name}'s output is sliced: dnn's functional models have no "
                         "operations on layer outputs but layers (Reshape, Concatenate, "
                         "...)")

    def _refused(operator: str):
        def refuse(self, *other):
            raise UsageError(f"{operator} on {self.name}'s output: dnn's functional models "
                             "compute with layers alone (layers.add, subtract, multiply, or x "
                             "+ y, x - y, x * y; Activation, Dense, ...)")
        return refuse

    __neg__ = __pos__ = _refused("a sign")
    __abs__ = _refused("abs()")
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _refused("/")
    __matmul__ = __rmatmul__ = _refused("@")
    __pow__ = __rpow__ = _refused("**")
    __mod__ = __rmod__ = _refused("%")
    del _refused


def _merged(kind: str, operator: str, left, right):
    """``left operator right``: a new merge layer of ``kind`` called on both; UsageError
    where one of them is no layer output."""
    from dnn.layers import merging  # the layers import this module
    from dnn.models.functional import is_symbolic  # the models import the layers

    if not (is_symbolic(left) and is_symbolic(right)):
        data = right if is_symbolic(left) else left
        raise UsageError(f"{operator} of a layer output and {type(data).__name__}: dnn's "
                         f"functional models join layer outputs alone, with layers.{kind}; "
                         "scale or shift one with a layer of its own")
    return getattr(merging, kind)()([left, right])
