"""What each data set is: its files, where to get them, how to check them.

A data set has one or more *sources*, tried in order. Each source has a format
(`pickle`: deeplearning.net's `mnist.pkl.gz`; `idx`: LeCun's four idx .gz
files) and mirrors. MNIST falls back from the pickle to torchvision's idx
files, so the pipeline still works when every pickle mirror is gone; both
routes give identical prepared data.

Checksums are md5 (what upstream publishes). A file is accepted when the md5
of its bytes *or* of its gunzipped content matches: redistributed copies such
as Debian's `dataset-fashion-mnist` are recompressed, so only the content
matches upstream.
"""

from dataclasses import dataclass, field
from typing import Literal

from mnist_pipeline.errors import PipelineError

Format = Literal["pickle", "idx"]
FORMATS: tuple[Format, ...] = ("pickle", "idx")

PICKLE_FILE = "mnist.pkl.gz"
IDX_FILES = {  # role -> file name (same names for MNIST and Fashion-MNIST)
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# The fixed split: the first 50k training images train, the last 10k validate
# (exactly how deeplearning.net cut mnist.pkl.gz), and t10k tests.
SPLITS = ("train", "valid", "test")
NUM_CLASSES = 10  # every registered data set
IMAGE_SHAPE = (28, 28)  # (height, width) in pixels, every registered data set

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class Source:
    format: Format
    # pickle: full URLs of the one file; idx: base URLs (directories) of the four files.
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...]
    sources: tuple[Source, ...]
    # file name -> accepted md5s (of the file's bytes or of its decompressed content)
    md5s: dict[str, frozenset[str]] = field(default_factory=dict)

    def files(self, fmt: Format) -> tuple[str, ...]:
        return (PICKLE_FILE,) if fmt == "pickle" else tuple(IDX_FILES.values())


MNIST = DatasetSpec(
    name="mnist",
    class_names=DIGIT_NAMES,
    sources=(
        Source(
            "pickle",
            (
                "https://github.com/pytorch/tutorials/raw/main/_static/mnist.pkl.gz",
                "https://figshare.com/ndownloader/files/25635053",
                "http://www.iro.umontreal.ca/~lisa/deep/data/mnist/mnist.pkl.gz",
            ),
        ),
        Source("idx", ("https://ossci-datasets.s3.amazonaws.com/mnist/",)),
    ),
    md5s={
        PICKLE_FILE: frozenset({"a02cd19f81d51c426d7ca14024243ce9"}),
        "train-images-idx3-ubyte.gz": frozenset({"f68b3c2dcbeaaa9fbdd348bbdeb94873"}),
        "train-labels-idx1-ubyte.gz": frozenset({"d53e105ee54ea40749a09fcbcd1e9432"}),
        "t10k-images-idx3-ubyte.gz": frozenset({"9fb629c4189551a2d022fa330f9573f3"}),
        "t10k-labels-idx1-ubyte.gz": frozenset({"ec29112dd5afa0611ce80d1b7f02629c"}),
    },
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    class_names=FASHION_NAMES,
    sources=(Source("idx", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)),),
    md5s={  # upstream .gz md5, then the md5 of the decompressed idx file
        "train-images-idx3-ubyte.gz": frozenset(
            {"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"}
        ),
        "train-labels-idx1-ubyte.gz": frozenset(
            {"25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"}
        ),
        "t10k-images-idx3-ubyte.gz": frozenset(
            {"bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"}
        ),
        "t10k-labels-idx1-ubyte.gz": frozenset(
            {"bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"}
        ),
    },
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        allowed = ", ".join(DATASETS)
        raise PipelineError(f"unknown data set {name!r}; allowed: {allowed}") from None
