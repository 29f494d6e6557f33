"""Lion: EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization
Algorithms"), written once over the backend's array namespace ``self.xp``."""

from dnn.optimizers import Optimizer


class Lion(Optimizer):
    """``c = b1*m + (1-b1)*g``; ``param -= lr * (sign(c) + wd*param)``; ``m = b2*m + (1-b2)*g``."""

    def __init__(self, learning_rate=1e-4, beta_1=0.9, beta_2=0.99, weight_decay=0.0):
        self.beta_1, self.beta_2, self.weight_decay = beta_1, beta_2, weight_decay
        super().__init__(learning_rate=learning_rate)

    def init_state(self, param):
        return {"m": self.xp.zeros_like(param)}

    def update(self, param, grad, state):
        xp, m = self.xp, state["m"]
        direction = xp.sign(self.beta_1 * m + (1 - self.beta_1) * grad)
        param -= self.learning_rate * (direction + self.weight_decay * param)
        m *= self.beta_2
        m += (1 - self.beta_2) * grad
