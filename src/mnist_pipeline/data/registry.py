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

import re
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
MAX_CLASSES = 1000  # a prepared manifest's or a checkpoint's classes
MAX_CLASS_NAME_CHARS = 100
# Class names reach CSV files that DVC's plot pages embed in a <script>, Markdown reports
# posted as PR comments, figures and terminals: letters and digits (any script), spaces
# and the punctuation of ordinary names only; no markup, quotes, @ or control characters.
CLASS_NAME_PATTERN = re.compile(r"\w(?:[\w .,'()&+/-]*[\w.)])?")


def class_names_problem(names: object) -> str | None:
    """What is wrong with a list of class names from a file, if anything (one phrase that
    shows the offending name escaped)."""
    if not isinstance(names, list) or not 2 <= len(names) <= MAX_CLASSES:
        count = len(names) if isinstance(names, list) else type(names).__name__
        return f"class_names must be a list of 2 to {MAX_CLASSES} names, got {count}"
    for index, name in enumerate(names):
        if not isinstance(name, str) or len(name) > MAX_CLASS_NAME_CHARS:
            return (
                f"class_names[{index}] must be a string of at most {MAX_CLASS_NAME_CHARS} "
                "characters"
            )
        if not CLASS_NAME_PATTERN.fullmatch(name):
            return (
                f"class_names[{index}] is {ascii(name)[:60]}: only letters, digits, spaces and "
                ".,'()&+/- are allowed"
            )
    if len(set(names)) != len(names):
        return "class_names must be distinct"
    return None


MB = 1_000_000


@dataclass(frozen=True)
class FileLimits:
    """How large one raw file may be: the known upstream size with headroom. fetch refuses
    a bigger download, and stops gunzipping (for the content md5) past the second limit."""

    max_bytes: int  # the .gz file as downloaded from a built-in mirror
    max_gunzipped_bytes: int  # its decompressed content


# Upstream sizes (MNIST / Fashion-MNIST, .gz -> content): mnist.pkl.gz 16.2 MB -> 220 MB;
# train images 9.9 / 26.4 MB -> 47.0 MB; train labels 29 kB -> 60 kB; t10k images
# 1.6 / 4.4 MB -> 7.8 MB; t10k labels 5 kB -> 10 kB. Limits: about 4x the file (a
# recompressed copy may compress worse) and 2x the content. Everything above that is
# not this data set (the pickle: 400 MB, the parser's limit too).
FILE_LIMITS = {
    PICKLE_FILE: FileLimits(64 * MB, 400 * MB),
    IDX_FILES["train_images"]: FileLimits(106 * MB, 95 * MB),
    IDX_FILES["train_labels"]: FileLimits(1 * MB, 1 * MB),
    IDX_FILES["test_images"]: FileLimits(18 * MB, 16 * MB),
    IDX_FILES["test_labels"]: FileLimits(1 * MB, 1 * MB),
}


@dataclass(frozen=True)
class Source:
    format: Format
    # pickle: full URLs of the one file; idx: base URLs (directories) of the four files.
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class Framing:
    """How the data set's images were cut from their originals, which `predict` repeats
    on a user's image: the content (what stands out from the background) is scaled,
    keeping its aspect ratio, until its longer side is `content_px`, then placed on the
    28x28 canvas with its centre of mass (`by_mass`) or the centre of its box in the
    middle. MNIST: digits fitted into 20x20, centred by their centre of mass (LeCun et
    al.); Fashion-MNIST: products trimmed, their longer side resized to 28, centred (Xiao
    et al., 2017)."""

    content_px: int
    by_mass: bool


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...]
    sources: tuple[Source, ...]
    # file name -> accepted md5s (of the file's bytes or of its decompressed content)
    md5s: dict[str, frozenset[str]] = field(default_factory=dict)
    # file name -> size limits (tests pass smaller ones)
    limits: dict[str, FileLimits] = field(default_factory=lambda: dict(FILE_LIMITS))
    # Whether a left-right mirror image is still of its class: a mirrored shoe is a shoe,
    # a mirrored 2 is not a 2. Decides `hflip: auto` (train.augment, evaluate.tta_hflip);
    # false, the safe side, unless a data set says otherwise.
    mirror_invariant: bool = False
    framing: Framing | None = None  # None: predict fits whole images

    def files(self, fmt: Format) -> tuple[str, ...]:
        return (PICKLE_FILE,) if fmt == "pickle" else tuple(IDX_FILES.values())


MNIST = DatasetSpec(
    name="mnist",
    class_names=DIGIT_NAMES,
    mirror_invariant=False,
    framing=Framing(content_px=20, by_mass=True),
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
    mirror_invariant=True,
    framing=Framing(content_px=28, by_mass=False),
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


def dataset_with_class_names(names: list[str]) -> DatasetSpec | None:
    """The registered data set whose classes these are, if any (a checkpoint records its
    class names, not its data set)."""
    return next((s for s in DATASETS.values() if list(s.class_names) == list(names)), None)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        allowed = ", ".join(DATASETS)
        raise PipelineError(f"unknown data set {name!r}; allowed: {allowed}") from None


def dataset_with_file(name: str, md5s: frozenset[str], other_than: str) -> str | None:
    """The registered data set, other than `other_than`, whose file `name` has one of
    `md5s` (of the file or of its content); None if there is none."""
    for spec in DATASETS.values():
        if spec.name != other_than and spec.md5s.get(name, frozenset()) & md5s:
            return spec.name
    return None


def resolve_hflip(setting: bool | str, dataset: str, key: str) -> bool:
    """Whether to mirror images for an `hflip` setting (true, false or "auto") on `dataset`:
    auto mirrors exactly where the data set allows it; true where it does not is an error."""
    allowed = get_dataset(dataset).mirror_invariant
    if setting is True and not allowed:
        raise PipelineError(
            f"{key}: {dataset} images must never be mirrored (a mirrored digit is not "
            "that digit); use auto or false"
        )
    return allowed if setting == "auto" else bool(setting)
