"""MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28."""

import numpy as np

from dnn.datasets.base import IdxDataset


class MNIST(IdxDataset):
    name = "mnist"
    # md5 of the published .gz files (the same files on every mirror), as torchvision lists them.
    files = {
        "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    }
    # The original host (yann.lecun.com) refuses most downloads, so it comes last.
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    image_shape = (28, 28)
    num_classes = 10
    sizes = {"train": 60000, "test": 10000}
    class_counts = {"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)}


def load_data(path=None):
    """Keras' ``mnist.load_data()``: ``(x_train, y_train), (x_test, y_test)``, images as
    uint8 ``(N, 28, 28)``, labels uint8 ``(N,)``; the files are found as :class:`MNIST`
    finds them (``path``, ``$DNN_DATA_DIR``, the cache, else downloaded)."""
    return tuple((images.astype(np.uint8), labels.astype(np.uint8))  # writable copies
                 for images, labels in MNIST().load_raw(path))
