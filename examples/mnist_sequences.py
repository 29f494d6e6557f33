"""A convolutional network over sequences, written for Keras 3 with only its import changed:
each MNIST digit read as a sequence of its 28 rows, each row 28 features, as a text is read
as a sequence of word vectors.  Conv1D slides along the rows, MaxPooling1D halves the
sequence, and GlobalMaxPooling1D keeps each filter's strongest response anywhere in it."""

import dnn as keras
from dnn import layers

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input(shape=(28, 28)),
    layers.Conv1D(64, 3, activation="relu"),
    layers.MaxPooling1D(2),
    layers.Conv1D(64, 3, activation="relu"),
    layers.GlobalMaxPooling1D(),
    layers.Dense(10, activation="softmax"),
], name="rows_as_sequences")
model.summary()

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train, x_test = x_train.astype("float32") / 255, x_test.astype("float32") / 255
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x_train, y_train, batch_size=128, epochs=5, validation_split=0.1)
test_scores = model.evaluate(x_test, y_test, verbose=2)
print("Test loss:", test_scores[0])
print("Test accuracy:", test_scores[1])
