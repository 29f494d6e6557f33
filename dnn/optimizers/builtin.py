"""The built-in optimizers.  Each update is one backend kernel, written once over ``xp`` in
:class:`dnn.backends.base.Backend` (and overridden only for speed by a backend)."""

from __future__ import annotations

from dnn.errors import UsageError
from dnn.optimizers.base import Optimizer


def _check_epsilon(optimizer) -> None:
    """Refuse epsilon 0: a parameter whose gradient has always been 0 would step by 0 / 0."""
    if not optimizer.epsilon > 0:
        raise UsageError(f"{type(optimizer).__name__} epsilon must be above 0 (it keeps the step "
                         f"finite where a gradient has always been 0), not {optimizer.epsilon!r}")


def _check_epsilon_fits(optimizer, param) -> None:
    """Refuse an epsilon below the smallest normal number of ``param``'s dtype (1e-50 in
    float32, say): it would round towards 0 and bring the 0 / 0 back."""
    smallest = float(optimizer.xp.finfo(param.dtype).smallest_normal)
    if optimizer.epsilon < smallest:
        raise UsageError(f"{type(optimizer).__name__} epsilon {optimizer.epsilon!r} is below the "
                         f"smallest normal number of the weights' dtype ({smallest:.3g}): it "
                         "would round towards 0")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in Keras."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        self.momentum, self.nesterov = momentum, nesterov
        super().__init__(learning_rate=learning_rate)
        if momentum > 1:  # Keras' bound: the velocity would grow without end
            raise UsageError(f"SGD momentum must be between 0 and 1, not {momentum!r}")

    def init_state(self, param):
        return {"velocity": self.xp.zeros_like(param)} if self.momentum else {}

    def update(self, param, grad, state):
        self.backend.sgd_update(param, grad, state.get("velocity"), self.learning_rate,
                                self.momentum, self.nesterov)


class RMSprop(Optimizer):
    """RMSprop with Keras' semantics: epsilon inside the square root, optional momentum and
    centering."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False):
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        super().__init__(learning_rate=learning_rate)
        if rho >= 1:
            raise UsageError(f"RMSprop rho must be below 1, not {rho!r}")
        _check_epsilon(self)

    def init_state(self, param):
        _check_epsilon_fits(self, param)
        zeros = self.xp.zeros_like
        state = {"mean_square": zeros(param)}
        if self.centered:
            state["mean_grad"] = zeros(param)
        if self.momentum:
            state["momentum"] = zeros(param)
        return state

    def update(self, param, grad, state):
        self.backend.rmsprop_update(
            param, grad, state["mean_square"], state.get("mean_grad"), state.get("momentum"),
            self.learning_rate, self.rho, self.momentum, self.epsilon)


class Adam(Optimizer):
    """Adam, as in Keras (epsilon outside the square root, bias correction folded into the
    step size)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        super().__init__(learning_rate=learning_rate)
        if beta_1 >= 1 or beta_2 >= 1:
            raise UsageError(f"Adam beta_1 and beta_2 must be below 1, not {beta_1!r} and "
                             f"{beta_2!r}")
        _check_epsilon(self)

    def init_state(self, param):
        _check_epsilon_fits(self, param)
        return {"m": self.xp.zeros_like(param), "v": self.xp.zeros_like(param)}

    def update(self, param, grad, state):
        t = self.iterations
        alpha = self.learning_rate * (1 - self.beta_2 ** t) ** 0.5 / (1 - self.beta_1 ** t)
        self.backend.adam_update(param, grad, state["m"], state["v"], alpha, self.beta_1,
                                 self.beta_2, self.epsilon)
