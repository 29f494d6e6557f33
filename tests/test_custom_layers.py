"""Layers of one's own: saved and loaded with ``custom_objects`` or a registration (Keras'
``register_keras_serializable``), cloned and rebuilt from JSON, their configs, and
``dnn.testing.check_layer`` catching a wrong backward pass."""

import subprocess
import sys

import numpy as np
import pytest

import dnn
from dnn.errors import UnknownLayerError, UsageError
from dnn.layers import Dense, Layer
from dnn.saving import registry
from dnn.testing import check_layer
from dnn.utils import to_categorical


class PReLU(Layer):
    """y = x where x > 0, else alpha * x: one learned alpha per feature, made in its own
    ``build`` (no ``weight_specs``), as a Keras user writes a layer."""

    def __init__(self, alpha_init=0.25, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = alpha_init

    def build(self, input_shape):
        alpha = self.add_weight(input_shape, "zeros", name="alpha")
        alpha[...] += self.alpha_init

    def forward(self, x, logits=False, training=False):
        self._input = x
        return self.xp.where(x > 0, x, self.params[0] * x)

    def backward(self, grad, logits=False):
        xp, x = self.xp, self._input
        self.grads[0][...] = xp.sum(grad * xp.where(x > 0, 0 * x, x), axis=0)
        if not self.needs_input_grad:
            return None
        return grad * xp.where(x > 0, 1 + 0 * x, 0 * x + self.params[0])

    def get_config(self):
        return {**super().get_config(), "alpha_init": self.alpha_init}


class Doubling(Layer):
    """y = 2x, no arguments of its own: the default ``get_config`` is enough."""

    def forward(self, x, logits=False, training=False):
        return 2 * x

    def backward(self, grad, logits=False):
        return 2 * grad if self.needs_input_grad else None


@pytest.fixture(autouse=True)
def no_registrations(monkeypatch):
    """Each test starts with no class registered and leaves none behind."""
    monkeypatch.setattr(registry, "_REGISTERED", {})
    monkeypatch.setattr(registry, "_NAMES", {})


@pytest.fixture
def trained(cpu, tmp_path):
    """A model with a PReLU and a Doubling between Dense layers, trained a little and saved:
    ``(model, path, x, y)``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = to_categorical(rng.integers(0, 3, 48), 3)
    model = dnn.Sequential([dnn.Input((6,)), Dense(8), PReLU(0.3), Doubling(),
                            Dense(3, activation="softmax")], backend=cpu, seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "custom.npz"
    model.save(path)
    return model, path, x, y


def test_an_unknown_class_is_named_with_the_way_to_make_it_known(trained):
    _, path, _, _ = trained
    with pytest.raises(UnknownLayerError, match=r"unknown layer class 'PReLU': give load_model "
                                                r"custom_objects=\{'PReLU': PReLU\}, or register"):
        dnn.load_model(path)


def test_custom_objects_load_the_model_and_its_weights(trained):
    model, path, x, y = trained
    loaded = dnn.load_model(path, custom_objects={"PReLU": PReLU, "Doubling": Doubling})
    assert type(loaded.layers[1]) is PReLU and loaded.layers[1].alpha_init == 0.3
    for ours, theirs in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # training goes on where it stopped: the same next epoch as the original's
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for ours, theirs in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_a_registered_class_loads_a_file_saved_before_and_after_registering(trained, tmp_path):
    model, before, x, _ = trained
    registry.register_keras_serializable("mine")(PReLU)
    registry.register_keras_serializable()(Doubling)
    assert model.layers[1].get_config() == {"class": "mine>PReLU", "alpha_init": 0.3,
                                            "name": model.layers[1].name}
    assert dnn.saving.get_registered_name(Doubling) == "Custom>Doubling"
    assert dnn.utils.get_registered_object("Custom>Doubling") is Doubling
    after = tmp_path / "after.npz"
    model.save(after)
    for path in (before, after):
        np.testing.assert_array_equal(dnn.load_model(path).predict(x, verbose=0),
                                      model.predict(x, verbose=0))


def test_a_scope_makes_classes_known_and_ends_with_its_block(trained):
    _, path, _, _ = trained
    with dnn.saving.custom_object_scope({"PReLU": PReLU}):
        with dnn.utils.custom_object_scope({"Doubling": Doubling}):
            assert type(dnn.load_model(path).layers[2]) is Doubling
    with pytest.raises(UnknownLayerError):
        dnn.load_model(path)


def test_clone_and_json_rebuild_layers_of_ones_own(trained):
    model, _, x, _ = trained
    clone = dnn.models.clone_model(model)  # its classes are at hand: no registration needed
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    assert clone.get_config() == model.get_config()
    rebuilt = dnn.models.model_from_json(model.to_json(),
                                         custom_objects={"PReLU": PReLU, "Doubling": Doubling})
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.predict(x, verbose=0).shape == (48, 3)


def test_a_custom_object_that_is_not_a_layer_is_refused(trained):
    _, path, _, _ = trained
    with pytest.raises(UnknownLayerError, match="custom object 'PReLU' is <function"):
        dnn.load_model(path, custom_objects={"PReLU": lambda: None, "Doubling": Doubling})
    with pytest.raises(TypeError, match="custom_objects is a dict of class names"):
        dnn.load_model(path, custom_objects=[PReLU])
    with pytest.raises(TypeError, match=r"load_model's second argument is custom_objects \(a "
                                        r"dict\); name the backend: load_model\(path, "
                                        r"backend='cpu'\)"):
        dnn.load_model(path, "cpu")


def test_a_layer_without_get_config_saves_the_arguments_it_was_made_with(cpu, tmp_path):
    class Shift(Doubling):
        def __init__(self, by, name=None, **kwargs):
            super().__init__(name=name, **kwargs)
            self.by = by

    model = dnn.Sequential([Dense(2, input_shape=(3,)), Shift(1.5, name="shift")],
                           backend=cpu)
    assert model.layers[1].get_config() == {"class": "Shift", "by": 1.5, "name": "shift"}
    path = tmp_path / "shift.npz"
    model.save(path)
    assert dnn.load_model(path, custom_objects={"Shift": Shift}).layers[1].by == 1.5
    kept = tmp_path / "kept.npz"
    unsaved = dnn.Sequential([Dense(2, input_shape=(3,)), Shift(np.ones(2))], backend=cpu)
    with pytest.raises(UsageError, match=r"Shift's argument by=array\(\[1., 1.\]\) cannot be "
                                         r"saved as it is: give Shift a get_config"):
        unsaved.save(kept)
    assert not kept.exists()


def test_the_command_line_names_an_unknown_class_in_one_line(trained):
    _, path, _, _ = trained
    run = subprocess.run([sys.executable, "-m", "dnn", "evaluate", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "Error: unknown layer class 'PReLU': give load_model custom_objects={'PReLU': PReLU}, "
        "or register the class with @dnn.saving.register_keras_serializable()")


def test_load_model_without_compiling_gives_an_uncompiled_model(trained):
    model, path, x, _ = trained
    loaded = dnn.load_model(path, custom_objects={"PReLU": PReLU, "Doubling": Doubling},
                            compile=False)
    assert loaded.optimizer is None and loaded.loss is None
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(UsageError, match="compile"):
        loaded.evaluate(x, model.predict(x, verbose=0), verbose=0)


def test_check_layer_passes_a_right_layer_and_names_a_wrong_gradient():
    check_layer(PReLU(0.3), (2, 3))
    check_layer(Doubling(), (4,))

    class WrongAlpha(PReLU):
        def backward(self, grad, logits=False):
            grad_x = super().backward(grad)
            self.grads[0][...] *= 1.01
            return grad_x

    class WrongInput(PReLU):
        def backward(self, grad, logits=False):
            return -super().backward(grad)

    with pytest.raises(AssertionError, match=r"the gradient of weight 0 \(alpha\) in grads\[0\] "
                                             r"at \(\d+,\) is .*; finite differences give"):
        check_layer(WrongAlpha(0.3), (5,))
    with pytest.raises(AssertionError, match="the input gradient"):
        check_layer(WrongInput(0.3), (5,))

    class Transposed(PReLU):
        def backward(self, grad, logits=False):
            return super().backward(grad).T

    class Nothing(PReLU):
        def backward(self, grad, logits=False):
            super().backward(grad)

    with pytest.raises(AssertionError, match=r"the input gradient .* has shape \(5, 3\), not "
                                             r"\(3, 5\)"):
        check_layer(Transposed(0.3), (5,))
    with pytest.raises(AssertionError, match=r"the input gradient .* has shape None, not"):
        check_layer(Nothing(0.3), (5,))


def test_a_layer_of_ones_own_trains_between_image_layers_and_loads_again(cpu, tmp_path):
    """PReLU on images (one alpha per position and channel, as Keras' default): its gradients
    check out on an image shape, a convnet with it between Conv2D and MaxPooling2D learns,
    and the saved model predicts the same once loaded."""
    check_layer(PReLU(0.3), (4, 4, 2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 1)).astype("float32")
    labels = (x[:, :3].sum(axis=(1, 2, 3)) > x[:, 3:].sum(axis=(1, 2, 3))).astype(int)
    model = dnn.Sequential([dnn.Input((6, 6, 1)), dnn.layers.Conv2D(4, 3), PReLU(0.1),
                            dnn.layers.MaxPooling2D(2), dnn.layers.Flatten(),
                            Dense(2, activation="softmax")], backend=cpu, seed=0)
    model.compile(optimizer=dnn.optimizers.Adam(0.01), loss="categorical_crossentropy")
    losses = model.fit(x, to_categorical(labels, 2), epochs=15, batch_size=16,
                       verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    alpha = model.backend.to_numpy(model.layers[1].params[0])
    assert alpha.shape == (4, 4, 4) and not np.all(alpha == np.float32(0.1))  # it learned
    path = tmp_path / "image.npz"
    model.save(path)
    loaded = dnn.models.load_model(path, custom_objects={"PReLU": PReLU}, backend="cpu")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_check_layer_names_a_config_that_does_not_make_the_layer_again():
    class Misnamed(PReLU):
        def get_config(self):
            return {**Layer.get_config(self), "alpha": self.alpha_init}

    class Drifting(PReLU):
        def get_config(self):
            return {**super().get_config(), "alpha_init": self.alpha_init + 1}

    with pytest.raises(AssertionError, match=r"cannot be made again from its get_config\(\): "
                                             r"Misnamed cannot be made from its config"):
        check_layer(Misnamed(0.3), (5,))
    with pytest.raises(AssertionError, match=r"gives .*'alpha_init': 1.3.*, but the layer made "
                                             r"from it gives .*'alpha_init': 2.3"):
        check_layer(Drifting(0.3), (5,))


def test_check_layer_names_a_wrong_output_shape():
    class Flattening(Doubling):
        def compute_output_shape(self, input_shape):
            return (int(np.prod(input_shape)),)

    with pytest.raises(AssertionError, match=r"forward gives \(3, 2, 3\); "
                                             r"compute_output_shape says \(3, 6\)"):
        check_layer(Flattening(), (2, 3))


@pytest.mark.parametrize("make, shape, training", [
    (lambda: Dense(3, activation="tanh"), (4,), False),
    (lambda: dnn.layers.Conv2D(2, 3, strides=2, padding="same"), (5, 5, 2), False),
    (lambda: dnn.layers.AveragePooling2D(2), (4, 4, 1), False),
    (lambda: dnn.layers.BatchNormalization(), (3,), True)])
def test_check_layer_passes_dnns_own_layers(make, shape, training):
    check_layer(make(), shape, training=training)


class Doubled(Dense):
    """A Dense whose outputs are doubled: a subclass of one of dnn's layers."""

    def forward(self, x, logits=False, training=False):
        return 2 * super().forward(x, logits, training)

    def backward(self, grad, logits=False):
        return super().backward(2 * grad, logits)


def test_a_subclass_of_a_built_in_layer_is_saved_as_itself(cpu, tmp_path):
    model = dnn.Sequential([Dense(4, input_shape=(3,)), Doubled(2)], backend=cpu, seed=0)
    assert [layer["class"] for layer in model.get_config()["layers"]] == ["Dense", "Doubled"]
    clone = dnn.models.clone_model(model)
    assert [type(layer) for layer in clone.layers] == [Dense, Doubled]
    path = tmp_path / "doubled.npz"
    model.save(path)
    with pytest.raises(UnknownLayerError, match="unknown layer class 'Doubled'"):
        dnn.load_model(path)  # not silently a plain Dense
    x = np.ones((2, 3), np.float32)
    registry.register_keras_serializable("mine")(Doubled)
    loaded = dnn.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [Dense, Doubled]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_registered_class_named_as_a_built_in_does_not_take_its_place(cpu, tmp_path):
    plain = dnn.Sequential([dnn.layers.Dense(2, input_shape=(3,))], backend=cpu)
    path = tmp_path / "plain.npz"
    plain.save(path)
    namesake = type("Dense", (Doubled,), {})  # a class of one's own named as dnn's
    registry.register_keras_serializable("mine")(namesake)
    assert type(dnn.load_model(path).layers[0]) is dnn.layers.Dense


def test_a_layer_of_ones_own_with_units_loads_and_is_described(cpu, tmp_path):
    class Wide(Doubling):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    model = dnn.Sequential([Dense(3, input_shape=(3,)), Wide(units=3)], backend=cpu)
    path = tmp_path / "wide.npz"
    model.save(path)
    assert type(dnn.load_model(path, custom_objects={"Wide": Wide}).layers[1]) is Wide
    assert dnn.saving.checkpoint.describe(model.get_config()) == "3 linear -> wide (float32)"


class PositionOnly(Doubling):
    def __init__(self, factor, /, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor


class Factors(Doubling):
    def __init__(self, *factors, **kwargs):
        super().__init__(**kwargs)
        self.factors = factors


class FiveUnits(Dense):
    """A Dense of 5 units whose __init__ takes no units: Dense's get_config cannot make it."""

    def __init__(self, **kwargs):
        super().__init__(5, **kwargs)


class Scaled(Dense):
    """A Dense with an argument of its own and the get_config it inherits."""

    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.scale = scale


@pytest.mark.parametrize("layer, message", [
    (lambda: PositionOnly(3.0), "PositionOnly's argument factor is given by position alone: "
                                "give PositionOnly a get_config that returns it and a "
                                "from_config that passes it"),
    (lambda: Factors(2.0, 5.0), "Factors's argument factors is given by position alone"),
    (lambda: FiveUnits(), r"FiveUnits cannot be made from its config \{'units': 5, .*multiple "
                          r"values for argument 'units'; give FiveUnits a get_config"),
])
def test_a_layer_its_config_cannot_make_again_is_refused_before_a_file_is_written(
        cpu, tmp_path, layer, message):
    model = dnn.Sequential([Dense(5, input_shape=(3,)), layer()], backend=cpu)
    path = tmp_path / "unreadable.npz"
    with pytest.raises(UsageError, match=message):
        model.save(path)
    with pytest.raises(UsageError, match=message):
        model.to_json()
    assert not path.exists()


def test_an_argument_of_a_subclass_and_numpy_numbers_are_kept(cpu, tmp_path):
    model = dnn.Sequential([Dense(5, input_shape=(3,)), Scaled(2, scale=np.float32(3.0))],
                           backend=cpu)
    assert model.layers[1].get_config()["scale"] == 3.0
    path = tmp_path / "scaled.npz"
    model.save(path)
    assert dnn.load_model(path, custom_objects={"Scaled": Scaled}).layers[1].scale == 3.0


def test_a_layer_without_its_passes_says_which_method_to_write():
    class Unfinished(Layer):
        pass

    with pytest.raises(NotImplementedError, match=r"Unfinished must implement forward\(self, "
                                                  r"x, logits=False, training=False\)"):
        Unfinished()(np.ones((2, 3)))
    with pytest.raises(NotImplementedError, match=r"Unfinished must implement backward\(self, "
                                                  r"grad, logits=False\) to be trained"):
        Unfinished().backward(np.ones((2, 3)))


class ForgetsItsInit(Layer):
    def __init__(self, units):  # no super().__init__()
        self.units = units

    def forward(self, x, logits=False, training=False):
        return x


class MakesItsWeightInInit(Layer):
    def __init__(self, units=2, input_dim=3):
        super().__init__()
        self.w = self.add_weight(shape=(input_dim, units))


@pytest.mark.parametrize("make, message", [
    (lambda: dnn.Sequential([ForgetsItsInit(2)]), "ForgetsItsInit was not initialised: its "
                                                  r"__init__ must call super\(\).__init__"),
    (lambda: ForgetsItsInit(2)(np.ones((2, 3))), "ForgetsItsInit was not initialised"),
    (lambda: MakesItsWeightInInit(), r"add_weight was called before the layer is built "
                                     r"\(from __init__\?\): dnn makes a layer's weights in "
                                     r"its build\(input_shape\)")],
    ids=["in-a-model", "called", "add_weight-in-init"])
def test_a_layer_of_ones_own_written_against_dnns_order_is_one_clear_error(make, message):
    with pytest.raises(UsageError, match=message):
        make()
    assert not hasattr(ForgetsItsInit(2), "name")  # an AttributeError all the same
