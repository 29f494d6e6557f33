"""A functional model of two inputs, as keras.io's functional API guide builds them ("Models
with multiple inputs"), written for Keras 3 with only its import changed: each digit comes as
its image and as its ink profile (the mean ink of each of its 28 rows and 28 columns).  A
small convnet reads the image, a Dense layer the profile, and ``layers.concatenate`` joins
what they found for the layer that names the digit.  The data go to ``fit`` as a dict keyed
by the Inputs' names (a list in their order works as well)."""

import numpy as np

import dnn as keras
from dnn import layers

keras.utils.set_random_seed(0)
image_input = keras.Input(shape=(28, 28, 1), name="image")
profile_input = keras.Input(shape=(56,), name="profile")

x = layers.Conv2D(16, 3, activation="relu")(image_input)
x = layers.MaxPooling2D(2)(x)
x = layers.Conv2D(32, 3, activation="relu")(x)
x = layers.MaxPooling2D(2)(x)
image_features = layers.Flatten()(x)
profile_features = layers.Dense(32, activation="relu")(profile_input)
x = layers.concatenate([image_features, profile_features])
outputs = layers.Dense(10, activation="softmax", name="digit")(x)

model = keras.Model(inputs=[image_input, profile_input], outputs=outputs, name="two_views")
model.summary()

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()


def views(images):
    """The two inputs of each image: its pixels in [0, 1], and its rows' and columns' mean."""
    images = images.astype("float32") / 255
    profile = np.concatenate([images.mean(axis=2), images.mean(axis=1)], axis=1)
    return {"image": images.reshape(-1, 28, 28, 1), "profile": profile}


train, test = views(x_train), views(x_test)
model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
history = model.fit(train, y_train, batch_size=128, epochs=2, validation_split=0.1)
test_scores = model.evaluate(test, y_test, verbose=2)
print("Test loss:", test_scores[0])
print("Test accuracy:", test_scores[1])
