"""Fashion-MNIST: 70,000 28x28 grey images of 10 kinds of clothing, in MNIST's IDX format."""

from dnn.datasets import IdxDataset


class FashionMNIST(IdxDataset):
    name = "fashion_mnist"
    # md5 of the published .gz files, as torchvision lists them.
    files = {
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    }
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    image_shape = (28, 28)
    num_classes = 10
    sizes = {"train": 60000, "test": 10000}
    # Balanced classes; these counts tell its files from MNIST's, which have the same names.
    class_counts = {"train": (6000,) * 10, "test": (1000,) * 10}
