"""How often a setting that a captured training step reads on the host changed: a layer's
or a model's ``trainable`` or a regularizer's factor, in any model.  A graph captured before
the count moved holds the old value (:meth:`dnn.trainers.step.TrainingStep.host_settings`);
an optimizer counts its own (``Optimizer.host_settings_changes``)."""

changes = 0


def changed() -> None:
    """Count one change."""
    global changes
    changes += 1


def same(old, new) -> bool:
    """Whether host setting ``new`` is ``old`` again: the same object, or an equal value of the
    same type (``True`` is not 1); a value whose ``==`` is no truth value counts as another."""
    if old is new:
        return True
    try:
        return type(old) is type(new) and bool(old == new)
    except Exception:
        return False
