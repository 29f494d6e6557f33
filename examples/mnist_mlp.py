"""The seed network as a Keras user writes it, with only its import changed
(``import dnn as keras``): MNIST, 784 -> Dense 512 relu -> Dense 10 softmax, RMSprop."""

import dnn as keras
from dnn import layers

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.reshape(60000, 784).astype("float32") / 255
x_test = x_test.reshape(10000, 784).astype("float32") / 255
y_train = keras.utils.to_categorical(y_train, 10)
y_test = keras.utils.to_categorical(y_test, 10)

model = keras.Sequential([
    layers.Dense(512, activation="relu", input_shape=(784,)),
    layers.Dropout(0.2),
    layers.Dense(10, activation="softmax"),
])
model.summary()
model.compile(optimizer="RMSprop", loss="categorical_crossentropy", metrics=["acc"])
history = model.fit(x_train, y_train, batch_size=128, epochs=5, verbose=2,
                    validation_split=0.1,
                    callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                                             restore_best_weights=True)])
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
model.save("mnist.npz")
restored = keras.models.load_model("mnist.npz")
predictions = restored.predict(x_test[:10], verbose=0)
