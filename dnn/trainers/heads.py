"""What a compiled model trains each of its outputs on: Keras' ``compile`` of a model of one
output or of several (a functional model's ``outputs=[a, b]`` or ``{"a": ..., "b": ...}``).

A :class:`Head` is one output's loss, its weight in the total loss and its metrics.  A model
of several outputs takes, as Keras 3 does: ``loss`` one for every output (a name or a Loss),
a list of one per output or a dict keyed by the outputs' names; ``loss_weights`` a list or a
dict (an output left out weighs 1); ``metrics`` and ``weighted_metrics`` a list of one list
per output, or a dict of a name's list (or one metric).  The total loss the optimizer
minimizes is ``sum(weight * output's mean loss)`` plus the regularizers' penalty; the logs
name each output's mean loss ``{output}_loss`` and its metrics ``{output}_{metric}``, after
the total ``loss`` (an output of a model of one is not named: ``loss``, ``accuracy``).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping

from dnn import losses, metrics as metrics_module
from dnn.errors import ArgumentTypeError, UsageError
from dnn.trainers.data import refuse_unknown_keys
from dnn.utils import is_number


class Head:
    """One output of a compiled model: its ``name`` (None for a model of one output: its
    figures are named without it), ``loss``, ``weight`` in the total loss, ``metrics`` and
    ``weighted_metrics`` (compiled Metric objects), whether the loss takes the logits of its
    layer's activation (``takes_logits``, set by the trainer) and ``total``, the 0-d device
    sum of its loss over the batches so far (made when the model is built)."""

    def __init__(self, name, loss, weight: float, metrics: tuple, weighted_metrics: tuple):
        self.name, self.loss, self.weight = name, loss, weight
        self.metrics, self.weighted_metrics = metrics, weighted_metrics
        self.takes_logits = False
        self.total = None

    def named(self, figure: str) -> str:
        """``figure`` (``loss``, a metric's name) as the logs name it for this output."""
        return figure if self.name is None else f"{self.name}_{figure}"


def _per_output(what: str, value, names: list, single) -> list:
    """``value`` (compile's ``what``) as one item per output named ``names``: a dict keyed by
    them (``single()`` for an output left out), a list or tuple of one each, else (for
    ``loss``) the one value for every output."""
    if isinstance(value, Mapping):
        refuse_unknown_keys(value, names, f"compile's {what}", "output")
        return [value[name] if name in value else single() for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise UsageError(f"compile's {what} list {len(value)} items for the model's "
                             f"{len(names)} outputs ({', '.join(names)}): give one each, or "
                             "a dict keyed by their names")
        return list(value)
    return [value] * len(names)


def _weight(name: str, weight) -> float:
    if not (is_number(weight) and weight >= 0) or weight != weight or weight == float("inf"):
        raise UsageError(f"the loss weight of {name} must be a finite number >= 0, not "
                         f"{reprlib.repr(weight)}")
    return float(weight)


def _metric_lists(what: str, metrics, names: list) -> list:
    """``compile``'s ``metrics`` (``what``) of a model of several outputs: one list (or one
    metric, or None) per output."""
    if metrics is None:
        return [None] * len(names)
    if isinstance(metrics, Mapping):
        return _per_output(what, metrics, names, lambda: None)
    if isinstance(metrics, (list, tuple)) and not all(
            item is None or isinstance(item, (list, tuple)) for item in metrics):
        raise UsageError(f"compile's {what} of a model of {len(names)} outputs must be a list "
                         f"of one list per output ({', '.join(names)}) or a dict keyed by "
                         f"their names, as Keras 3 takes them: [['accuracy'], ['mae']]")
    if not isinstance(metrics, (list, tuple)):
        raise ArgumentTypeError(f"compile's {what} must be a list of lists or a dict, not "
                                f"{type(metrics).__name__}")
    return _per_output(what, metrics, names, lambda: None)


def compile_heads(names: list, layers: list, loss, loss_weights, metrics,
                  weighted_metrics) -> list[Head]:
    """The :class:`Head` of each output of a model (its ``names`` and ``layers``, the layers
    that give them) from ``compile``'s arguments (module docstring)."""
    several = len(names) > 1
    if several:
        for name in names:
            if name == "val" or name.startswith("val_"):
                raise UsageError(f"an output named {name!r} would log figures named as "
                                 f"validation's ({name}_loss): name it otherwise")
        given_losses = _per_output("loss", loss, names, lambda: None)
        weights = _per_output("loss_weights", [1.0] * len(names) if loss_weights is None
                              else loss_weights, names, lambda: 1.0)
        metric_lists = _metric_lists("metrics", metrics, names)
        weighted_lists = _metric_lists("weighted_metrics", weighted_metrics, names)
    else:
        if isinstance(loss, (Mapping, list, tuple)):
            loss = _per_output("loss", loss, names, lambda: None)[0]
        if isinstance(loss_weights, (Mapping, list, tuple)):
            loss_weights = _per_output("loss_weights", loss_weights, names, lambda: 1.0)[0]
        metric_lists, weighted_lists = (
            _per_output(what, value, names, lambda: None) if isinstance(value, Mapping)
            else [value] for what, value in (("metrics", metrics),
                                             ("weighted_metrics", weighted_metrics)))
        given_losses, weights = [loss], [1.0 if loss_weights is None else loss_weights]
    heads = []
    for name, layer, given, weight, listed, weighted in zip(
            names, layers, given_losses, weights, metric_lists, weighted_lists):
        if given is None:
            raise UsageError(f"compile has no loss for the output {name}: give a loss for "
                             "every output")
        head_loss = losses.get(given)
        units = layer.output_features
        heads.append(Head(name if several else None, head_loss, _weight(name, weight),
                          metrics_module.check(listed, head_loss, units),
                          metrics_module.check(weighted, head_loss, units)))
    compiled = [metric for head in heads for metric in (*head.metrics, *head.weighted_metrics)]
    for metric in compiled:
        if sum(other is metric for other in compiled) > 1:
            raise UsageError(f"compile was given the metric object {metric.name} twice: a "
                             "metric keeps the totals of one output, make one for each")
    return heads


def in_loss_order(heads: list[Head], loss, outputs_by_name: bool) -> list[Head]:
    """``heads`` in the order Keras 3 lists their losses (in ``evaluate``'s list): that of
    compile's ``loss`` where it is a dict and the outputs came as one (``outputs_by_name``),
    else the outputs'."""
    if len(heads) == 1 or not (outputs_by_name and isinstance(loss, Mapping)):
        return list(heads)
    order = list(loss)
    return sorted(heads, key=lambda head: order.index(head.name))

