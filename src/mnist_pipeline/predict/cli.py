"""`mnist-pipeline predict`: classify image files with a model of the pipeline: its
checkpoint (.pt), or the export stage's TorchScript (.ts) or ONNX (.onnx) file, whose
metadata hold the class names (CPU only, no MC dropout: they run in eval mode).
With `--calibration`, the probabilities are temperature-scaled by the temperature the
evaluate stage fitted on the valid split (its metrics file), as evaluate reports them.

Each file that cannot be used (unreadable, wrong shape, empty) is one line on stderr and
is skipped; the others are still predicted, and the exit status is 1 if any failed.
"""

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_pipeline.cli import one_line, printable
from mnist_pipeline.config.params import MAX_MC_SAMPLES, MAX_METRICS_BYTES
from mnist_pipeline.data.registry import (
    DatasetSpec,
    Framing,
    dataset_with_class_names,
    get_dataset,
    resolve_hflip,
)
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.evaluate.metrics import MAX_TEMPERATURE, MIN_TEMPERATURE
from mnist_pipeline.export.formats import EXPORTED_SUFFIXES, read_exported
from mnist_pipeline.fileio import atomic_file, check_replaceable, read_regular_file
from mnist_pipeline.model.checkpoint import load_checkpoint
from mnist_pipeline.predict.images import (
    INVERT_CHOICES,
    Invert,
    Prepared,
    find_files,
    preprocess,
    read_images,
)
from mnist_pipeline.predict.infer import Prediction, predict
from mnist_pipeline.runtime import resolve_device

PROG = "predict"
FIT_CHOICES = ("dataset", "canvas")
HFLIP_CHOICES = ("auto", "true", "false")
DIGITS = 6  # probabilities and uncertainties are written rounded to this many decimals
# MC dropout holds samples x images x classes probabilities: 10 million passes are 400 MB
# with 10 classes (evaluate's limit is 1000 samples of its 10,000 test images).
MAX_MC_PASSES = 10_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders (recursed)")
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="checkpoint (models/model.pt), or an exported model.ts or model.onnx (files you "
        "trust: a TorchScript file is code)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes per image (default: 3)")
    parser.add_argument(
        "--invert",
        choices=INVERT_CHOICES,
        default="auto",
        help="make images light-on-dark like the training data; auto: when the border is "
        "mostly bright (default: auto)",
    )
    parser.add_argument(
        "--fit",
        choices=FIT_CHOICES,
        default="dataset",
        help="dataset: frame each image's content as the model's data set framed its images "
        "(digits: into 20x20 by their centre of mass; clothes: cropped, longer side 28; a "
        "model of no known data set: as canvas); canvas: fit the whole image into 28x28 "
        "(default: dataset)",
    )
    parser.add_argument(
        "--tta-hflip",
        choices=HFLIP_CHOICES,
        default="false",
        help="average each image's prediction with its mirror image's, as evaluate.tta_hflip "
        "does; auto: where the model's data set allows it (Fashion-MNIST, never MNIST digits) "
        "(default: false)",
    )
    parser.add_argument(
        "--mc-samples",
        type=int,
        default=0,
        help="MC-dropout passes for predictive entropy and mutual information (default: 0)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="the evaluate stage's metrics of this model (metrics/evaluate.json): scale the "
        "probabilities by the temperature it fitted on the valid split (evaluate.calibrate), "
        "as evaluate reports them; the top class never changes (default: unscaled)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the MC dropout masks")
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument("--out", type=Path, help="output file (default: stdout)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")


def run(args: argparse.Namespace) -> int:
    """Predict every image of `args.paths`; returns the exit status."""
    if args.top_k < 1:
        return _report(f"--top-k must be >= 1, got {args.top_k}")
    if not 0 <= args.mc_samples <= MAX_MC_SAMPLES:
        return _report(f"--mc-samples must be in [0, {MAX_MC_SAMPLES}], got {args.mc_samples}")
    try:
        if args.out is not None:  # before any work: an output that cannot be written
            check_replaceable(args.out)
        temperature = 1.0 if args.calibration is None else read_temperature(args.calibration)
        model, class_names, dataset, device = load_model(args.model, args.device, args.mc_samples)
        # A model of no known data set (its own class names) has no framing to repeat.
        framing = dataset.framing if args.fit == "dataset" and dataset is not None else None
        hflip = test_time_flip(args.tta_hflip, dataset)
        prepared, failures = load_all(args.paths, args.invert, framing)
        if args.mc_samples * len(prepared) > MAX_MC_PASSES:
            raise PipelineError(
                f"--mc-samples {args.mc_samples} x {len(prepared)} images is over the limit "
                f"of {MAX_MC_PASSES:,} passes; use fewer samples or fewer images"
            )
        predictions: list[Prediction] = []
        if prepared:
            images = torch.from_numpy(np.stack([p.image_u8 for p in prepared])).to(device)
            predictions, with_mc = predict(
                model, images, args.top_k, args.mc_samples, args.seed, temperature, hflip
            )
            if args.mc_samples and not with_mc:
                print(f"{PROG}: the model has no dropout; --mc-samples skipped", file=sys.stderr)
        elif not failures:
            failures = _report("no image files found")
        text = format_predictions(prepared, predictions, class_names, args.format)
        if args.out is None:
            sys.stdout.write(text)
        else:
            with atomic_file(args.out, make_parents=False) as tmp:
                tmp.write_text(text)
    except PipelineError as exc:
        return _report(one_line(exc))
    return 1 if failures else 0


def load_model(
    path: Path, device_name: str, mc_samples: int
) -> tuple[torch.nn.Module, list[str], DatasetSpec | None, torch.device]:
    """The model of `path` (a checkpoint, or an exported file by its suffix), its class
    names, its data set (a checkpoint's: the one with its class names) and the device it
    runs on."""
    if path.suffix not in EXPORTED_SUFFIXES:
        device = resolve_device(device_name, "--device")
        model, checkpoint = load_checkpoint(path, device)
        names = checkpoint["class_names"]
        return model, names, dataset_with_class_names(names), device
    if device_name not in ("auto", "cpu"):
        raise PipelineError(f"--device {device_name}: {path.suffix} files run on the CPU here")
    if mc_samples:
        raise PipelineError(
            f"--mc-samples needs the checkpoint (models/model.pt): a {path.suffix} file runs "
            "its dropout in eval mode only"
        )
    model, meta = read_exported(path)
    return model, meta["class_names"], get_dataset(meta["dataset"]), torch.device("cpu")


def test_time_flip(setting: str, dataset: DatasetSpec | None) -> bool:
    """Whether `--tta-hflip setting` mirrors images for a model of `dataset` (None: a
    model of its own class names, which only `true` mirrors)."""
    value: bool | str = {"true": True, "false": False}.get(setting, setting)
    if dataset is None:
        return value is True
    return resolve_hflip(value, dataset.name, "--tta-hflip")


def read_temperature(path: Path) -> float:
    """The temperature in evaluate's metrics file `path` (`valid.temperature`, written
    when evaluate.calibrate is on), checked: a number in the range evaluate fits in."""
    data = read_regular_file(path, MAX_METRICS_BYTES, "a metrics file")
    try:
        document = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # thousands of [ or {: no metrics file of evaluate's
        raise PipelineError(f"{path}: not valid JSON (nested too deeply)") from None
    valid = document.get("valid") if isinstance(document, dict) else None
    temperature = valid.get("temperature") if isinstance(valid, dict) else None
    if temperature is None:
        raise PipelineError(
            f"{path}: no valid.temperature; give the evaluate stage's metrics "
            "(metrics/evaluate.json) of a run with evaluate.calibrate: true"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE  # also refuses NaN
    ):
        raise PipelineError(
            f"{path}: valid.temperature must be a number in "
            f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {printable(repr(temperature)[:40])}"
        )
    return float(temperature)


def load_all(
    paths: list[Path], invert: Invert, framing: Framing | None = None
) -> tuple[list[Prepared], int]:
    """Every readable image, preprocessed, in file order; and the number of failed files."""
    prepared, failures = [], 0
    for path in find_files(paths):
        try:
            prepared += [preprocess(image, invert, framing) for image in read_images(path)]
        except PipelineError as exc:
            failures += _report(one_line(exc))
        except Exception as exc:  # a decoder's surprise must not stop the other files
            failures += _report(f"{path}: cannot read image ({one_line(exc)})")
    return prepared, failures


def format_predictions(
    prepared: list[Prepared], predictions: list[Prediction], class_names: list[str], fmt: str
) -> str:
    records = [_record(p, pred, class_names) for p, pred in zip(prepared, predictions, strict=True)]
    if fmt == "json":  # ASCII only: every control or format character escaped
        return json.dumps(records, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    return _csv(records)


def _record(image: Prepared, prediction: Prediction, class_names: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "file": image.name,
        "inverted": image.inverted,
        "top": [
            {"class": c, "name": class_names[c], "probability": round(p, DIGITS)}
            for c, p in prediction.top
        ],
    }
    if prediction.entropy is not None and prediction.mutual_information is not None:
        record["entropy"] = round(prediction.entropy, DIGITS)
        record["mutual_information"] = round(prediction.mutual_information, DIGITS)
    return record


def _csv(records: list[dict[str, Any]]) -> str:
    """One row per image: file, inverted, then class/name/probability per rank, then the
    MC figures if computed."""
    k = max((len(r["top"]) for r in records), default=0)
    with_mc = any("entropy" in r for r in records)
    header = ["file", "inverted"]
    for rank in range(1, k + 1):
        header += [f"class_{rank}", f"name_{rank}", f"probability_{rank}"]
    header += ["entropy", "mutual_information"] if with_mc else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        # A file name may hold ESC (terminal escape sequences) or line breaks: escaped.
        row = [printable(r["file"]), r["inverted"]]
        for top in r["top"]:
            row += [top["class"], top["name"], top["probability"]]
        row += [r["entropy"], r["mutual_information"]] if with_mc else []
        writer.writerow(row)
    return buffer.getvalue()


def _report(message: str) -> int:
    """One error line on stderr; returns 1 (one failure)."""
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    return 1
