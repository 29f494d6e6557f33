"""The built-in optimizers, each written as a plugin is: its formula once, over the backend's
array namespace ``xp``, in its ``update``.  A backend may offer a fused kernel of the same
update (``fused_update``, a name the optimizer asks the backend for); it is tested against the
formula here, which stays the reference."""

from __future__ import annotations

from dnn.errors import UsageError
from dnn.optimizers.base import Optimizer


def _check_epsilon(optimizer, epsilon) -> None:
    """Refuse epsilon 0: a parameter whose gradient has always been 0 would step by 0 / 0.
    Once built, also one its array's dtype rounds towards 0 (:func:`_check_epsilon_fits`)."""
    if not epsilon > 0:
        raise UsageError(f"{type(optimizer).__name__} epsilon must be above 0 (it keeps the step "
                         f"finite where a gradient has always been 0), not {epsilon!r}")
    built = optimizer.__dict__.get("_device")
    if built and "epsilon" in built:
        _check_epsilon_fits(optimizer, epsilon, built["epsilon"].dtype)


def _check_epsilon_fits(optimizer, epsilon, dtype) -> None:
    """Refuse an epsilon below the smallest normal number of ``dtype``, the weights' (1e-50 in
    float32, say): it would round towards 0 and bring the 0 / 0 back."""
    smallest = float(optimizer.xp.finfo(dtype).smallest_normal)
    if epsilon < smallest:
        raise UsageError(f"{type(optimizer).__name__} epsilon {epsilon!r} is below the "
                         f"smallest normal number of the weights' dtype ({smallest:.3g}): it "
                         "would round towards 0")


def _check_momentum(optimizer, momentum) -> None:
    """Refuse a momentum above 1 (Keras' bound: the velocity would grow without end), and,
    once built with momentum 0 (no buffer for it), a momentum that needs one."""
    if momentum > 1:
        raise UsageError(f"{type(optimizer).__name__} momentum must be between 0 and 1, not "
                         f"{momentum!r}")
    optimizer.check_built_state("momentum", momentum,
                                fits=not momentum or bool(optimizer.built_setting("momentum")))


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in Keras."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        self.momentum, self.nesterov = momentum, nesterov
        super().__init__(learning_rate=learning_rate)

    def check_setting(self, name, value):
        if name == "momentum":  # the velocity is made at build when momentum is not 0
            _check_momentum(self, value)

    def init_state(self, param):
        return {"velocity": self.xp.zeros_like(param)} if self.momentum else {}

    fused_update = "sgd"  # (param, grad, velocity or None, learning_rate, momentum, nesterov)

    def update(self, param, grad, state):
        """Without momentum ``param -= lr * g``.  With it, ``v = momentum * v - lr * g`` and
        ``param += v``, or with Nesterov ``param += momentum * v - lr * g``."""
        velocity, lr, momentum = state.get("velocity"), self.learning_rate, self.momentum
        if self.fused(param, grad, velocity, lr, momentum, self.nesterov):
            return
        if velocity is None:
            param -= lr * grad
            return
        velocity *= momentum
        velocity -= lr * grad
        if self.nesterov:
            param += momentum * velocity - lr * grad
        else:
            param += velocity


class RMSprop(Optimizer):
    """RMSprop with Keras' semantics: epsilon inside the square root, optional momentum and
    centering."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False):
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        super().__init__(learning_rate=learning_rate)

    def check_setting(self, name, value):
        if name == "rho" and value >= 1:
            raise UsageError(f"RMSprop rho must be below 1, not {value!r}")
        if name == "epsilon":
            _check_epsilon(self, value)
        if name == "momentum":  # the momentum buffer is made at build when it is not 0
            _check_momentum(self, value)
        if name == "centered":  # the mean gradient is made at build when centered
            self.check_built_state(name, value, fits=value == self.built_setting(name))

    def init_state(self, param):
        _check_epsilon_fits(self, self.epsilon, param.dtype)
        zeros = self.xp.zeros_like
        state = {"mean_square": zeros(param)}
        if self.centered:
            state["mean_grad"] = zeros(param)
        if self.momentum:
            state["momentum"] = zeros(param)
        return state

    # (param, grad, mean_square, mean_grad or None, momentum buffer or None, learning_rate,
    #  rho, momentum, epsilon)
    fused_update = "rmsprop"

    def update(self, param, grad, state):
        """``ms = rho * ms + (1 - rho) * g**2`` and ``step = lr * g / sqrt(ms + eps)``.
        Centered: ``mg = rho * mg + (1 - rho) * g`` and ``ms - mg**2`` inside the root.  With
        momentum: ``buf = momentum * buf + step``, the step taken.  Then ``param -= step``."""
        mean_square, mean_grad = state["mean_square"], state.get("mean_grad")
        buffer, rho = state.get("momentum"), self.rho
        if self.fused(param, grad, mean_square, mean_grad, buffer, self.learning_rate, rho,
                      self.momentum, self.epsilon):
            return
        mean_square *= rho
        mean_square += (1 - rho) * (grad * grad)
        denominator = mean_square
        if mean_grad is not None:
            mean_grad *= rho
            mean_grad += (1 - rho) * grad
            denominator = mean_square - mean_grad * mean_grad
        step = (self.learning_rate * grad) / self.xp.sqrt(denominator + self.epsilon)
        if buffer is not None:
            buffer *= self.momentum
            buffer += step
            step = buffer
        param -= step


class Adam(Optimizer):
    """Adam, as in Keras (epsilon outside the square root, bias correction folded into the
    step size), with Keras' AMSGrad variant (``amsgrad=True``)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.amsgrad = amsgrad
        super().__init__(learning_rate=learning_rate)

    def check_setting(self, name, value):
        if name in ("beta_1", "beta_2") and value >= 1:
            raise UsageError(f"Adam {name} must be below 1, not {value!r}")
        if name == "epsilon":
            _check_epsilon(self, value)
        if name == "amsgrad":  # the running maximum of v is made at build with amsgrad
            self.check_built_state(name, value, fits=value == self.built_setting(name))

    def init_state(self, param):
        _check_epsilon_fits(self, self.epsilon, param.dtype)
        zeros = self.xp.zeros_like
        state = {"m": zeros(param), "v": zeros(param)}
        if self.amsgrad:
            state["v_hat"] = zeros(param)
        return state

    fused_update = "adam"  # (param, grad, m, v, step_size, beta_1, beta_2, epsilon)

    def build(self, params, backend):
        super().build(params, backend)
        # written by every step, kept between them: made here, not in a step, whose memory is
        # a captured step's (dnn.backends.Backend.buffer)
        self.step_size = backend.buffer((), self.learning_rate.dtype)

    def begin_step(self):
        """The bias correction folded into the step size of step ``t``, on the device, as
        Keras computes it: ``step_size = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``."""
        xp = self.xp
        t = xp.astype(self.iterations, self.learning_rate.dtype)
        self.step_size[...] = (self.learning_rate * xp.sqrt(1 - self.beta_2 ** t)
                               / (1 - self.beta_1 ** t))

    def update(self, param, grad, state):
        """``m += (g - m) * (1 - beta_1)``; ``v += (g**2 - v) * (1 - beta_2)``;
        ``param -= step_size * m / (sqrt(v) + eps)``, with ``step_size`` from
        :meth:`begin_step`.  AMSGrad (Keras'): ``v_hat = max(v_hat, v)`` takes v's place in
        the step (no fused kernel)."""
        m, v, step_size = state["m"], state["v"], self.step_size
        v_hat = state.get("v_hat")
        if v_hat is None and self.fused(param, grad, m, v, step_size, self.beta_1, self.beta_2,
                                        self.epsilon):
            return
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        if v_hat is not None:
            v_hat[...] = self.xp.maximum(v_hat, v)
            v = v_hat
        param -= (step_size * m) / (self.xp.sqrt(v) + self.epsilon)
