"""The checkpoint's model as TorchScript and ONNX files, checked against the eager model.

Both files take exactly what the checkpoint's model takes and return what it returns:

    input   "images": uint8 (N, 28, 28), N any; pixels 0..255, light ink on a dark
            background, i.e. the prepared data (or what `mnist-pipeline predict` makes
            of an image file)
    output  "logits": float32 (N, num_classes); softmax them for probabilities

The input normalization ((pixel/255 - train mean) / train std, or pixel/255 for
`input_norm: unit`) is inside both, so a consumer needs no statistics of the data set.
Both carry what a consumer needs besides (`metadata`): the class names, the data set and
this input/output contract, as JSON text: the ONNX file in its metadata_props, the
TorchScript file as the extra file METADATA_FILE. `read_exported` loads either file with
its metadata checked, which is how `mnist-pipeline predict` takes them.
uint8 rather than float input: the training data is uint8, a float input would invite
callers to pass [0, 1] floats and get garbage, and it is 4x less to copy.

TorchScript is the eager model traced as is (the same kernels, so the same floats on the
same machine). ONNX cannot express the in-place fused multiply-add of `InputNorm`, so its
copy normalizes with a multiply and an add: the same formula, rounded once more.
"""

import contextlib
import copy
import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_pipeline.data.registry import DATASETS, IMAGE_SHAPE, class_names_problem
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import read_regular_file
from mnist_pipeline.model.checkpoint import MAX_CHECKPOINT_BYTES
from mnist_pipeline.model.networks import InputNorm

ONNX_OPSET = 17  # onnxruntime 1.16+ runs it; every op the models use exists since opset 13
INPUT_NAME, OUTPUT_NAME = "images", "logits"
MAX_LOGIT_DIFF = 1e-4  # parity: the largest |logit difference| allowed on any test image
BATCH_SIZE = 1000
EXAMPLE_ROWS = 2  # traced with 2 images; the batch axis stays dynamic
# The TorchScript zip archive, as torch writes it (caffe2/serialize/inline_container.cc).
SERIALIZATION_ID = ".data/serialization_id"
SERIALIZATION_ID_DIGITS = 40
RECORD_ALIGNMENT = 64
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ZIP_LOCAL_HEADER_BYTES = 30
ZIP_EXTRA_HEADER_BYTES = 4
# The metadata: one JSON document (TorchScript: an extra file of the archive; ONNX: one
# text per key of metadata_props, each JSON).
METADATA_FILE = "mnist_pipeline.json"
METADATA_KEYS = ("producer", "dataset", "class_names", "input", "output")
PRODUCER = "mnist-pipeline"
MAX_METADATA_BYTES = 1_000_000  # class names and a contract: kilobytes
EXPORTED_SUFFIXES = {".ts": "torchscript", ".onnx": "onnx"}


def metadata(class_names: list[str], dataset: str) -> dict[str, Any]:
    """What an exported file says about itself: who wrote it, the data set and class
    names of its model, and its input and output (the module docstring's contract)."""
    return {
        "producer": PRODUCER,
        "dataset": dataset,
        "class_names": list(class_names),
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": ["batch", *IMAGE_SHAPE],
            "pixels": "0..255, light ink on a dark background, as the prepared data",
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(class_names)]},
    }


class PortableInputNorm(nn.Module):
    """`InputNorm`'s formula without its in-place fused op, which ONNX cannot express."""

    def __init__(self, norm: InputNorm) -> None:
        super().__init__()
        self.scale, self.shift = norm.scale, norm.shift

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return images_u8.to(torch.float32) * self.scale + self.shift


def torchscript_bytes(
    model: nn.Module, example_u8: torch.Tensor, meta: dict[str, Any] | None = None
) -> bytes:
    """The eval-mode model traced on `example_u8` (uint8 (n, 28, 28)), as a .ts file's bytes,
    with `meta` (`metadata`) as its METADATA_FILE: the same bytes for the same model
    wherever and whenever it is exported."""
    model.eval()
    buffer = io.BytesIO()  # in memory: the archive's inner folder name stays fixed
    extra = {} if meta is None else {METADATA_FILE: json.dumps(meta, sort_keys=True)}
    with torch.no_grad(), _quiet_deprecation():
        # No trace check: the export stage checks the file against the eager model on
        # every test image (`parity`); torch's own check on the example rows imports
        # torch.distributed for its comparison, a second of every export.
        traced = torch.jit.trace(model, example_u8[:EXAMPLE_ROWS], check_trace=False)
        torch.jit.save(traced, buffer, _extra_files=extra)
    return reproducible_archive(buffer.getvalue())


def reproducible_archive(archive: bytes) -> bytes:
    """A TorchScript archive without what changes from one save to the next: its random
    serialization id becomes a digest of the other records, and the `.debug_pkl` records
    go (they map code to the traced source files by absolute path, so a queued experiment's
    copy or a fresh clone would export other bytes; only error messages of the loaded
    model use them). Records stay in order, uncompressed, their data 64-byte aligned as
    torch writes them."""
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        records = [
            (info.filename, source.read(info))
            for info in source.infolist()
            if not info.filename.endswith(".debug_pkl")
        ]
    digest = hashlib.sha256()
    for name, data in records:
        if not name.endswith(SERIALIZATION_ID):
            digest.update(name.encode() + b"\0" + data)
    serialization_id = str(int(digest.hexdigest(), 16))[:SERIALIZATION_ID_DIGITS].encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            # Pad the local header's extra field (id "FB", as torch does) so that the data
            # starts at a multiple of RECORD_ALIGNMENT.
            header = ZIP_LOCAL_HEADER_BYTES + len(name.encode()) + ZIP_EXTRA_HEADER_BYTES
            padding = -(out.tell() + header) % RECORD_ALIGNMENT
            info.extra = b"FB" + padding.to_bytes(2, "little") + b"Z" * padding
            target.writestr(info, serialization_id if name.endswith(SERIALIZATION_ID) else data)
    return out.getvalue()


def onnx_bytes(
    model: nn.Module, example_u8: torch.Tensor, meta: dict[str, Any] | None = None
) -> bytes:
    """The eval-mode model as ONNX (dynamic batch axis), as an .onnx file's bytes, with
    `meta` (`metadata`) in its metadata_props, each value as JSON."""
    portable = _portable_copy(model).eval()
    buffer = io.BytesIO()
    with _quiet_deprecation():
        torch.onnx.export(
            portable,
            (example_u8[:EXAMPLE_ROWS],),
            buffer,  # type: ignore[arg-type]  # the legacy exporter takes file objects too
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    if meta is None:
        return buffer.getvalue()
    import onnx  # only here: reading a model needs onnxruntime alone

    proto = onnx.load_from_string(buffer.getvalue())
    for key in METADATA_KEYS:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(meta[key], sort_keys=True)
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """torch 2.9+ marks TorchScript and the TorchScript-based ONNX exporter deprecated in
    favour of torch.export, whose ONNX route needs onnxscript. Both still work and are what
    C++/mobile runtimes load today; the warnings would only clutter the stage's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _portable_copy(model: nn.Module) -> nn.Module:
    portable = copy.deepcopy(model).cpu()
    for name, module in list(portable.named_modules()):
        if isinstance(module, InputNorm):
            parent_name, _, child = name.rpartition(".")
            setattr(portable.get_submodule(parent_name), child, PortableInputNorm(module))
    return portable


def load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    with _quiet_deprecation():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def onnx_session(data: bytes) -> Any:
    """An onnxruntime CPU session of the model (onnxruntime is imported only here)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Parity:
    """How far one exported model's logits are from the eager model's on `images` rows."""

    images: int
    max_abs_logit_diff: float
    argmax_mismatches: int

    def ok(self) -> bool:
        return self.max_abs_logit_diff <= MAX_LOGIT_DIFF and self.argmax_mismatches == 0


@torch.inference_mode()
def eager_logits(model: nn.Module, images_u8: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(b).float() for b in images_u8.split(BATCH_SIZE)])


@torch.inference_mode()
def torchscript_logits(module: torch.jit.ScriptModule, images_u8: torch.Tensor) -> torch.Tensor:
    return torch.cat([module(b).float() for b in images_u8.split(BATCH_SIZE)])


def onnx_logits(session: Any, images_u8: torch.Tensor) -> torch.Tensor:
    batches = [
        session.run([OUTPUT_NAME], {INPUT_NAME: b.numpy()})[0]
        for b in images_u8.cpu().split(BATCH_SIZE)
    ]
    return torch.from_numpy(np.concatenate(batches))


def parity(reference: torch.Tensor, candidate: torch.Tensor) -> Parity:
    """Compare logits (N, C) of an exported model with the eager model's."""
    if candidate.shape != reference.shape:
        raise PipelineError(
            f"exported model returned logits {tuple(candidate.shape)}, expected "
            f"{tuple(reference.shape)}"
        )
    diff = (candidate.double() - reference.double()).abs().max().item()
    mismatches = (candidate.argmax(dim=1) != reference.argmax(dim=1)).sum().item()
    return Parity(len(reference), diff, int(mismatches))


def check_parity(results: dict[str, Parity]) -> None:
    """A PipelineError naming every format whose parity fails."""
    failed = [
        f"{name}: max |logit diff| {p.max_abs_logit_diff:.3g} (limit {MAX_LOGIT_DIFF:g}), "
        f"{p.argmax_mismatches} of {p.images} argmax differ"
        for name, p in results.items()
        if not p.ok()
    ]
    if failed:
        raise PipelineError("export parity failed: " + "; ".join(failed))


def parity_metrics(results: dict[str, Parity]) -> dict[str, Any]:
    """metrics/export.json: the limits, then per format the figures."""
    return {
        "max_abs_logit_diff_limit": MAX_LOGIT_DIFF,
        **{
            name: {
                "images": p.images,
                "max_abs_logit_diff": p.max_abs_logit_diff,
                "argmax_mismatches": p.argmax_mismatches,
            }
            for name, p in results.items()
        },
    }


class OnnxModel(nn.Module):
    """An ONNX file's model (an onnxruntime CPU session) behind the nn.Module call that
    the eager model answers: uint8 images (N, 28, 28) in, float32 logits out."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return onnx_logits(self.session, images_u8)


def read_exported(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """An exported file (.ts or .onnx, by its suffix) as a CPU model in eval mode, and its
    metadata, checked: a file of this pipeline whose contract `predict` can feed. Only load
    files you trust: a TorchScript file is code."""
    kind = EXPORTED_SUFFIXES.get(path.suffix)
    if kind is None:
        raise PipelineError(f"{path}: not a .ts or .onnx file")
    # Opened without blocking, checked on the open file: a FIFO or a device is never read.
    data = read_regular_file(path, MAX_CHECKPOINT_BYTES, "a model")
    label = "TorchScript" if kind == "torchscript" else "ONNX"
    try:
        if kind == "torchscript":
            extra = {METADATA_FILE: ""}
            with _quiet_deprecation():
                module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
            texts = _split_metadata(extra[METADATA_FILE])
            model: nn.Module = module
        else:
            session = onnx_session(data)
            texts = dict(session.get_modelmeta().custom_metadata_map)
            model = OnnxModel(session)
    except PipelineError:
        raise
    except Exception as exc:  # a truncated archive, a protobuf that does not parse
        first = " ".join(str(exc).split())[:200]
        raise PipelineError(f"{path}: not a readable {label} file ({first})") from None
    try:
        meta = _check_metadata(texts)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    return model.eval(), meta


def _split_metadata(text: str | bytes) -> dict[str, str]:
    """The TorchScript extra file (one JSON document) as ONNX keeps it: key -> JSON text."""
    if not text:
        return {}
    if len(text) > MAX_METADATA_BYTES:
        raise PipelineError(f"metadata over {MAX_METADATA_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError:
        raise PipelineError(f"{METADATA_FILE} is not JSON") from None
    if not isinstance(document, dict):
        raise PipelineError(f"{METADATA_FILE} is not a JSON object")
    return {str(key): json.dumps(value) for key, value in document.items()}


def _check_metadata(texts: dict[str, str]) -> dict[str, Any]:
    """The metadata, parsed and checked where it enters: untrusted text."""
    if texts.get("producer") != json.dumps(PRODUCER):
        raise PipelineError(
            "no mnist-pipeline metadata (class names, data set, input contract); export it "
            "with this version's export stage (dvc repro export)"
        )
    if sum(len(key) + len(value) for key, value in texts.items()) > MAX_METADATA_BYTES:
        raise PipelineError(f"metadata over {MAX_METADATA_BYTES} bytes")
    meta = {}
    for key in METADATA_KEYS:
        if key not in texts:
            raise PipelineError(f"metadata has no {key!r}")
        try:
            meta[key] = json.loads(texts[key])
        except ValueError:
            raise PipelineError(f"metadata {key!r} is not JSON") from None
    if not isinstance(meta["dataset"], str) or meta["dataset"] not in DATASETS:
        raise PipelineError(f"metadata: unknown data set {str(meta['dataset'])[:40]!r}")
    names_problem = class_names_problem(meta["class_names"])
    if names_problem:
        raise PipelineError(f"metadata: {names_problem}")
    expected = metadata(meta["class_names"], meta["dataset"])
    for key in ("input", "output"):
        if meta[key] != expected[key]:
            raise PipelineError(
                f"metadata: its {key} is not the contract this version feeds "
                f"({json.dumps(expected[key])[:200]})"
            )
    return meta
