"""The typed, validated form of `params.yaml`, one dataclass per stage section.

Every stage loads the whole file once with `load_params`, so a typo anywhere
fails fast, then reads only its own sections (which `dvc.yaml` lists as that
stage's params, so DVC re-runs exactly the stages whose values changed).

params.yaml is the one source of every value: the classes here hold types and bounds,
no defaults, and a key missing from the file is an error naming it (a deleted line must
not silently change the run, and DVC tracks only keys that are in the file).
"""

import dataclasses
import functools
import itertools
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mnist_pipeline.config.strict import check, load_yaml_mapping, parse
from mnist_pipeline.data.registry import DATASETS  # plain Python: no torch, no cycle
from mnist_pipeline.errors import PipelineError

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

# Upper bounds of the numeric params. Each is far above any sensible value; they exist
# so that a typo (an extra zero or three) fails at load instead of exhausting memory,
# disk or time hours later. The README's "Limits and troubleshooting" lists them.
# train.lr has none beyond being finite: a huge one costs nothing and ends in the loop's
# one-line "training diverged" error.
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_FETCH_TIMEOUT_S = 3600.0  # fetch.timeout_s: one network read
MAX_FETCH_DEADLINE_S = 86_400.0  # fetch.deadline_s: one file, retries included
MAX_FETCH_RETRIES = 20
MAX_FETCH_BACKOFF_S = 600.0  # the first retry delay; later ones double up to MAX_BACKOFF_S
MAX_FETCH_BYTES = 4_000_000_000  # fetch.max_bytes: a file from a user's source
MAX_SHARD_ROWS = 1_000_000  # prepare.shard_size (= the idx parser's row limit)
MAX_HIDDEN_WIDTH = 65_536  # model.hidden_sizes: units of one hidden layer
MAX_HIDDEN_LAYERS = 8
MAX_CONV_CHANNELS = 4096  # model.conv_channels: output channels of one block
MAX_BLOCK_CONVS = 4  # model.block_convs
# The model's weights: 400 MB of float32, which training holds ~4 times (weights, gradients,
# Adam's two moments); every preset is under 2 million. Also bounds what a checkpoint may ask
# `evaluate`, `export` and `predict` to allocate.
MAX_MODEL_PARAMETERS = 100_000_000
CLASSES_FOR_SIZE = 10  # the registered data sets' classes, for the size check at load
IMAGE_SIDE_PX = 28  # MNIST's and Fashion-MNIST's images are 28x28 (data.registry.IMAGE_SHAPE)
MAX_SHIFT_PX = 8  # train.augment.shift_px: a third of a 28-pixel image
MAX_BATCH_SIZE = 65_536  # train.batch_size and evaluate.batch_size: images per batch
MAX_EPOCHS = 10_000  # also train.step_epochs and train.early_stopping_patience
MAX_WEIGHT_DECAY = 10.0
MAX_NPROC_PER_NODE = 1024  # at launch also: CPU processes <= this machine's cores
MAX_NNODES = 1024
MAX_DISTRIBUTED_TIMEOUT_S = 86_400.0
MAX_MC_SAMPLES = 1000  # evaluate.mc_samples: each pass is one more full test-set inference
MAX_CALIBRATION_BINS = 1000
MAX_WORST_EXAMPLES = 256  # images in the worst-examples grid
# The stages' metrics files as any reader takes them back (the review, a sweep, predict's
# --calibration): evaluate.json is ~2 kB, train's ~0.3 kB.
MAX_METRICS_BYTES = 1_000_000


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_at_most(value: float, bound: float, key: str) -> None:
    """The one wording of an upper-bound error: `key: must be <= bound, got value`."""
    check(value <= bound, key, f"must be <= {bound:g}, got {value:g}")


def check_device(device: str) -> None:
    allowed = "auto, cpu, cuda, cuda:N, mps"
    ok = DEVICE_PATTERN.fullmatch(device) is not None
    check(ok, "device", f"{device!r} is not one of: {allowed}")


@dataclass(frozen=True)
class Location:
    """One `fetch.source` entry, classified: an http(s) URL as written, or a local path."""

    kind: Literal["url", "path"]
    value: str


def parse_location(source: str) -> Location:
    """The one reading of a source string: http(s):// is a URL; file:// (local only) and
    anything without a scheme is a path (`~` expanded); any other scheme is an error."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise PipelineError(f"{source}: an http(s) URL needs a host")
        return Location("url", source)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PipelineError(f"{source}: file:// URLs must name a local path")
        return Location("path", urllib.request.url2pathname(parsed.path))
    # len > 1 keeps Windows drive letters (C:\...) paths.
    if len(parsed.scheme) > 1:
        raise PipelineError(
            f"{source}: unsupported URL scheme {parsed.scheme!r}; "
            "use http(s)://, file:// or a local path"
        )
    if not source.strip():
        raise PipelineError("an empty string names no source; use null for the mirrors")
    return Location("path", str(Path(source).expanduser()))


@dataclass(frozen=True)
class FetchConfig:
    dataset: str  # a key of data/registry.py's DATASETS, checked at load
    # None: the data set's built-in mirrors. Otherwise an http(s):// or file:// URL,
    # or a local path, of the file (pickle) or the directory holding the files;
    # or a list of such sources, tried in order (your own mirrors).
    source: str | tuple[str, ...] | None
    # File name -> md5 that the user trusts (of the file or its decompressed bytes);
    # adds to the built-in checksums, for private mirrors and recompressed copies.
    checksums: dict[str, str]
    timeout_s: float  # one network read (no byte for this long: a stalled server)
    # One file, from the request to the last byte, retries included: a server that trickles
    # (headers or body) a byte at a time never trips timeout_s, but trips this.
    deadline_s: float
    retries: int  # attempts per source for transient failures
    # First retry delay; doubles each retry up to http_download.MAX_BACKOFF_S (30 s); a larger
    # first delay stays as set.
    backoff_s: float
    # Largest file accepted from fetch.source (the built-in mirrors have per-file limits).
    max_bytes: int

    def __post_init__(self) -> None:
        allowed = ", ".join(DATASETS)
        check(self.dataset in DATASETS, "dataset", f"{self.dataset!r} is not one of: {allowed}")
        check(self.timeout_s > 0, "timeout_s", "must be > 0")
        check_at_most(self.timeout_s, MAX_FETCH_TIMEOUT_S, "timeout_s")
        check(self.deadline_s > 0, "deadline_s", "must be > 0")
        check_at_most(self.deadline_s, MAX_FETCH_DEADLINE_S, "deadline_s")
        check(self.retries >= 1, "retries", "must be >= 1")
        check_at_most(self.retries, MAX_FETCH_RETRIES, "retries")
        check(self.backoff_s >= 0, "backoff_s", "must be >= 0")
        check_at_most(self.backoff_s, MAX_FETCH_BACKOFF_S, "backoff_s")
        check(self.max_bytes >= 1, "max_bytes", "must be >= 1")
        check_at_most(self.max_bytes, MAX_FETCH_BYTES, "max_bytes")
        check(
            self.source != (), "source", "an empty list names no source; use null for the mirrors"
        )
        self.locations  # noqa: B018 (parsed here, once: a bad entry is an error at load)
        for name, md5 in self.checksums.items():
            ok = re.fullmatch(r"[0-9a-f]{32}", md5) is not None
            check(ok, f"checksums.{name}", f"expected 32 lowercase hex digits (md5), got {md5!r}")

    @functools.cached_property
    def locations(self) -> tuple[Location, ...] | None:
        """`source` classified, once (at load); None: the data set's built-in mirrors."""
        if self.source is None:
            return None
        entries = (self.source,) if isinstance(self.source, str) else self.source
        locations = []
        for index, entry in enumerate(entries):
            try:
                locations.append(parse_location(entry))
            except PipelineError as exc:
                key = "source" if isinstance(self.source, str) else f"source[{index}]"
                raise PipelineError(f"{key}: {exc}") from None
        return tuple(locations)


@dataclass(frozen=True)
class PrepareConfig:
    shard_size: int  # rows per .pt shard

    def __post_init__(self) -> None:
        check(self.shard_size >= 1, "shard_size", "must be >= 1")
        check_at_most(self.shard_size, MAX_SHARD_ROWS, "shard_size")


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["mlp", "cnn"]
    dropout: float  # before every hidden layer's output; 0 disables
    hidden_sizes: tuple[int, ...]  # mlp: hidden widths; cnn: the head's widths
    conv_channels: tuple[int, ...]  # cnn: output channels of each conv block
    block_convs: int  # cnn: 3x3 convs per block (the first one pools)
    # standardize: (x - train mean) / train std; unit: pixel / 255, as the tutorial feeds it
    input_norm: Literal["standardize", "unit"]

    def __post_init__(self) -> None:
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(all(h >= 1 for h in self.hidden_sizes), "hidden_sizes", "widths must be >= 1")
        check(
            all(h <= MAX_HIDDEN_WIDTH for h in self.hidden_sizes),
            "hidden_sizes",
            f"widths must be <= {MAX_HIDDEN_WIDTH}, got {max(self.hidden_sizes, default=0)}",
        )
        check(
            len(self.hidden_sizes) <= MAX_HIDDEN_LAYERS,
            "hidden_sizes",
            f"at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(self.hidden_sizes)}",
        )
        check(len(self.conv_channels) >= 1, "conv_channels", "needs at least one block")
        check(all(c >= 1 for c in self.conv_channels), "conv_channels", "must be >= 1")
        check(
            all(c <= MAX_CONV_CHANNELS for c in self.conv_channels),
            "conv_channels",
            f"must be <= {MAX_CONV_CHANNELS}, got {max(self.conv_channels)}",
        )
        check(len(self.conv_channels) <= 4, "conv_channels", "at most 4 blocks for 28x28 input")
        check(
            1 <= self.block_convs <= MAX_BLOCK_CONVS,
            "block_convs",
            f"must be in [1, {MAX_BLOCK_CONVS}]",
        )
        count = self.parameter_count(CLASSES_FOR_SIZE)
        check(
            count <= MAX_MODEL_PARAMETERS,
            "hidden_sizes" if self.name == "mlp" else "conv_channels",
            f"the model would have {count:,} parameters, over the limit of "
            f"{MAX_MODEL_PARAMETERS:,}; use smaller layers",
        )

    def parameter_count(self, num_classes: int) -> int:
        """Trainable parameters of the model `build_model` makes for 28x28 images (the
        formula, so params are checked without building anything; a test compares it with
        the built models)."""
        if self.name == "mlp":
            return _dense_count(IMAGE_SIDE_PX * IMAGE_SIDE_PX, self.hidden_sizes, num_classes)
        count, channels, side = 0, 1, IMAGE_SIDE_PX
        for out in self.conv_channels:  # bias-free 3x3 convs, each with a batch norm
            count += 9 * channels * out + 2 * out
            count += (self.block_convs - 1) * (9 * out * out + 2 * out)
            channels, side = out, side // 2
        return count + _dense_count(channels * side * side, self.hidden_sizes, num_classes)


def _dense_count(in_features: int, hidden: tuple[int, ...], num_classes: int) -> int:
    widths = (in_features, *hidden, num_classes)
    return sum(a * b + b for a, b in itertools.pairwise(widths))


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to each training image, drawn per epoch from the seed."""

    shift_px: int  # translate by up to this many pixels each way (zero fill); 0: none
    # Mirror half the images left-right. auto: where the data set allows it (Fashion-MNIST,
    # never MNIST digits); true on MNIST is an error.
    hflip: bool | Literal["auto"]

    def __post_init__(self) -> None:
        check(0 <= self.shift_px <= MAX_SHIFT_PX, "shift_px", f"must be in [0, {MAX_SHIFT_PX}]")


@dataclass(frozen=True)
class TrainConfig:
    device: str  # auto | cpu | cuda | cuda:N | mps
    epochs: int
    batch_size: int
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float  # peak learning rate (onecycle) or initial one (others)
    momentum: float  # sgd only
    nesterov: bool  # sgd only; needs momentum > 0
    weight_decay: float
    schedule: Literal["constant", "step", "cosine", "onecycle"]
    warmup_fraction: float  # onecycle: share of the steps spent rising to the peak lr
    step_epochs: int  # step: decay every this many epochs
    gamma: float  # step: decay factor
    label_smoothing: float
    early_stopping_patience: int  # epochs without a better valid loss; 0 disables
    precision: Literal["fp32", "bf16"]  # bf16: autocast on any device
    compile: bool  # torch.compile the model
    # MLP on CPU in fp32, one process, no compile: hand-written gradients instead of
    # autograd (same maths, less per-step overhead); false forces autograd.
    manual_mlp_step: bool
    threads: int  # intra-op CPU threads; 0 keeps torch's default; <= this machine's cores
    augment: AugmentConfig

    def __post_init__(self) -> None:
        check_device(self.device)
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check_at_most(self.epochs, MAX_EPOCHS, "epochs")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check_at_most(self.batch_size, MAX_BATCH_SIZE, "batch_size")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(0.0 <= self.momentum < 1.0, "momentum", "must be in [0, 1)")
        check(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check_at_most(self.weight_decay, MAX_WEIGHT_DECAY, "weight_decay")
        check(0.0 < self.warmup_fraction < 1.0, "warmup_fraction", "must be in (0, 1)")
        check(self.step_epochs >= 1, "step_epochs", "must be >= 1")
        check_at_most(self.step_epochs, MAX_EPOCHS, "step_epochs")
        check(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)")
        check(self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0")
        check_at_most(self.early_stopping_patience, MAX_EPOCHS, "early_stopping_patience")
        check(self.threads >= 0, "threads", "must be >= 0")
        # More threads than cores only thrash; a params file written on a bigger machine
        # says so here rather than as a run many times slower.
        cores = usable_cpus()
        check(
            self.threads <= cores,
            "threads",
            f"{self.threads} > the {cores} CPU cores here (0 keeps torch's default)",
        )
        sgd_only = self.optimizer == "sgd" or (self.momentum == 0 and not self.nesterov)
        check(sgd_only, "momentum", f"applies to sgd only, not {self.optimizer}")


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training with torchrun: world size = nproc_per_node * nnodes."""

    nproc_per_node: int  # processes on each machine (CUDA: one GPU each); 1: no torchrun
    nnodes: int  # machines; > 1 needs rdzv_endpoint, the same on every machine
    rdzv_endpoint: str  # host:port of the c10d rendezvous (one of the machines)
    rdzv_id: str  # names the run at the rendezvous; same on every machine
    timeout_s: float  # rendezvous and collectives: a stuck rank ends the run then

    def __post_init__(self) -> None:
        check(self.nproc_per_node >= 1, "nproc_per_node", "must be >= 1")
        # On CPU also <= the cores, checked at launch (distributed.py), where the device is known.
        check_at_most(self.nproc_per_node, MAX_NPROC_PER_NODE, "nproc_per_node")
        check(self.nnodes >= 1, "nnodes", "must be >= 1")
        check_at_most(self.nnodes, MAX_NNODES, "nnodes")
        check(self.timeout_s > 0, "timeout_s", "must be > 0")
        check_at_most(self.timeout_s, MAX_DISTRIBUTED_TIMEOUT_S, "timeout_s")
        endpoint_ok = re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", self.rdzv_endpoint) is not None
        check(
            self.nnodes == 1 or endpoint_ok,
            "rdzv_endpoint",
            f"nnodes is {self.nnodes}, so it must be host:port, got {self.rdzv_endpoint!r}",
        )
        check(
            re.fullmatch(r"[\w.\-]+", self.rdzv_id) is not None,
            "rdzv_id",
            f"letters, digits, '.', '-', '_' only, got {self.rdzv_id!r}",
        )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass(frozen=True)
class EvaluateConfig:
    device: str  # auto | cpu | cuda | cuda:N | mps
    batch_size: int
    mc_samples: int  # Monte-Carlo dropout passes; 0 disables
    calibration_bins: int
    # Temperature scaling: fit T on the valid split, report both splits' metrics with
    # softmax(logits / T) (the ECE and loss before beside them); accuracy is unchanged.
    calibrate: bool
    worst_examples: int  # most confidently wrong test images shown in a grid
    # Average each image's probabilities with its mirror image's (test-time flip).
    # auto: where the data set allows mirroring (Fashion-MNIST, not MNIST).
    tta_hflip: bool | Literal["auto"]

    def __post_init__(self) -> None:
        check_device(self.device)
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check_at_most(self.batch_size, MAX_BATCH_SIZE, "batch_size")
        check(self.mc_samples >= 0, "mc_samples", "must be >= 0")
        check(self.mc_samples != 1, "mc_samples", "1 pass has no spread; use 0 or >= 2")
        check_at_most(self.mc_samples, MAX_MC_SAMPLES, "mc_samples")
        check(self.calibration_bins >= 1, "calibration_bins", "must be >= 1")
        check_at_most(self.calibration_bins, MAX_CALIBRATION_BINS, "calibration_bins")
        check(self.worst_examples >= 0, "worst_examples", "must be >= 0")
        check_at_most(self.worst_examples, MAX_WORST_EXAMPLES, "worst_examples")


@dataclass(frozen=True)
class Params:
    seed: int  # seeds every random number generator the pipeline uses
    fetch: FetchConfig
    prepare: PrepareConfig
    model: ModelConfig
    train: TrainConfig
    distributed: DistributedConfig
    evaluate: EvaluateConfig

    def __post_init__(self) -> None:
        check(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}], got {self.seed}")


def parse_params(data: Any) -> Params:
    """Validate params.yaml's data (the parsed mapping): every key present, typed and in
    range, and the checks that span sections."""
    params = parse(Params, data, where="")
    check(
        params.train.batch_size % params.distributed.world_size == 0,
        "train.batch_size",
        f"the global batch {params.train.batch_size} must split evenly over the "
        f"{params.distributed.world_size} processes (distributed.nproc_per_node * nnodes)",
    )
    return params


def load_params(path: Path) -> Params:
    """Read and validate the whole params file; errors name the file and the key."""
    data = load_yaml_mapping(path)
    try:
        return parse_params(data)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain YAML/JSON-friendly data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
