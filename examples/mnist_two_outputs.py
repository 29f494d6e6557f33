"""A functional model of two outputs, as keras.io's functional API guide builds them ("Models
with multiple inputs and outputs"), written for Keras 3 with only its import changed: a Dense
layer learns features of each digit's pixels that two heads share, ``digit``, which names the
digit, and ``ink``, which tells how much of the image is inked (its mean pixel).  The outputs
come as a dict: ``compile`` takes a loss, a loss weight and metrics for each, keyed by the
dict's keys, ``fit`` and ``evaluate`` the targets keyed the same way, and the logs name each
output's figures after it (``digit_accuracy``, ``ink_mae``)."""

import dnn as keras
from dnn import layers

keras.utils.set_random_seed(0)
pixels = keras.Input(shape=(784,), name="pixels")
features = layers.Dense(256, activation="relu")(pixels)
digit = layers.Dense(10, activation="softmax", name="digit")(features)
ink = layers.Dense(1, name="ink")(features)

model = keras.Model(inputs=pixels, outputs={"digit": digit, "ink": ink}, name="two_heads")
model.summary()

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.reshape(-1, 784).astype("float32") / 255
x_test = x_test.reshape(-1, 784).astype("float32") / 255
train_targets = {"digit": y_train, "ink": x_train.mean(axis=1, keepdims=True)}
test_targets = {"digit": y_test, "ink": x_test.mean(axis=1, keepdims=True)}

model.compile(optimizer="rmsprop",
              loss={"digit": "sparse_categorical_crossentropy", "ink": "mse"},
              loss_weights={"digit": 1.0, "ink": 0.5},
              metrics={"digit": ["accuracy"], "ink": ["mae"]})
history = model.fit(x_train, train_targets, batch_size=128, epochs=2, validation_split=0.1)
test_scores = model.evaluate(x_test, test_targets, verbose=2, return_dict=True)
print("Test accuracy:", test_scores["digit_accuracy"])
print("Test ink error:", test_scores["ink_mae"])
