"""`mnist-pipeline predict` on a tiny trained checkpoint: image files of every supported
kind give the model's own predictions on the tensors, and bad input is one stderr line
each while the other files are still predicted."""

import csv
import gzip
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.bench_predict import on_sheet
from mnist_pipeline.__main__ import main
from mnist_pipeline.data.prepared import pixel_mean_std
from mnist_pipeline.data.registry import DIGIT_NAMES, FASHION_MNIST, MNIST, Framing
from mnist_pipeline.evaluate.metrics import predict_logits
from mnist_pipeline.export import formats
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.predict.images import Loaded, preprocess
from mnist_pipeline.testing.configs import make_params, model_config, train_config
from mnist_pipeline.testing.synthetic import make_images
from mnist_pipeline.train.loop import fit
from tests.support import python_env

CLASSES = [f"class-{i}" for i in range(10)]
TEST_ROWS = 24


def _train(tmp: Path, dropout: float) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    train, valid = make_images(400, 1), make_images(80, 2)
    mean, std = pixel_mean_std(train[0].numpy())
    spec = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=mean, pixel_std=std)
    model_cfg = model_config(hidden_sizes=(32,), dropout=dropout)
    model = build_model(model_cfg, spec)
    cfg = train_config(device="cpu", epochs=2, batch_size=50, lr=0.003)
    fit(model, train, valid, cfg, seed=0)
    params = make_params(model=model_cfg, train=cfg)
    path = tmp / f"model-{dropout}.pt"
    save_checkpoint(path, model, model_cfg, spec, CLASSES, params, {"epochs_run": 2})
    return path, model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, model in eval mode, test images uint8 (N, 28, 28), their argmax)."""
    path, model = _train(tmp_path_factory.mktemp("model"), dropout=0.2)
    images = make_images(TEST_ROWS, 3)[0]
    expected = predict_logits(model, images, 100).argmax(dim=1)
    return path, model, images, expected


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _top1(output: str) -> list[int]:
    return [record["top"][0]["class"] for record in json.loads(output)]


def _write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def _png_folder(folder: Path, images: torch.Tensor) -> Path:
    """A folder holding images (N, 28, 28) as 000.png, 001.png, ... (predict's file order)."""
    folder.mkdir()
    for i, image in enumerate(images.numpy()):
        _write_png(folder / f"{i:03d}.png", image)
    return folder


def _write_idx(path: Path, images: np.ndarray, gzipped: bool) -> Path:
    data = struct.pack(">4i", 0x803, *images.shape) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def test_pngs_give_the_models_predictions(tmp_path, capsys, trained):
    checkpoint, _, images, expected = trained
    for i, image in enumerate(images.numpy()):
        _write_png(tmp_path / f"{i:03d}.png", image)
    code, out, err = _predict(capsys, "--model", str(checkpoint), str(tmp_path))
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert [Path(r["file"]).name for r in records] == [f"{i:03d}.png" for i in range(TEST_ROWS)]
    assert _top1(out) == expected.tolist()
    assert not any(r["inverted"] for r in records)  # dark background: left as is


def test_dark_on_light_images_are_inverted(tmp_path, capsys, trained):
    """Inverted copies (black ink on white, as RGB JPEG-free PNGs) come back to the
    training polarity; `never` keeps them inverted and `always` inverts the originals."""
    checkpoint, _, images, expected = trained
    for i, image in enumerate(images.numpy()):
        rgb = np.repeat((255 - image)[:, :, None], 3, axis=2)
        _write_png(tmp_path / f"{i:03d}.png", rgb)
    code, out, _ = _predict(capsys, "--model", str(checkpoint), str(tmp_path))
    assert code == 0 and _top1(out) == expected.tolist()
    assert all(r["inverted"] for r in json.loads(out))
    code, out, _ = _predict(capsys, "--model", str(checkpoint), "--invert", "never", str(tmp_path))
    assert code == 0 and not any(r["inverted"] for r in json.loads(out))


def test_preprocessing_undoes_inversion_and_integer_upscaling_exactly(trained):
    _, _, images, _ = trained
    image = images[0].numpy()
    assert np.array_equal(preprocess(Loaded("a", 255.0 - image)).image_u8, image)
    assert np.array_equal(preprocess(Loaded("a", image * 1.0), "always").image_u8, 255 - image)
    # 4x nearest upscaling, shrunk back with the box filter: each pixel is a 4x4 mean.
    big = image.repeat(4, axis=0).repeat(4, axis=1).astype(np.float64)
    assert np.array_equal(preprocess(Loaded("a", big)).image_u8, image)


def test_resized_images_keep_aspect_ratio_and_mostly_the_prediction(tmp_path, capsys, trained):
    """100x80 (width x height) copies come back as 28x22 images centred on a 28x28 black
    canvas: the pixels differ (squeezed), so only most predictions can match."""
    checkpoint, model, images, expected = trained
    for i, image in enumerate(images.numpy()):
        big = Image.fromarray(image).resize((100, 80), Image.Resampling.BILINEAR)
        big.save(tmp_path / f"{i:03d}.png")
    prepared = preprocess(Loaded("x", np.asarray(big, dtype=np.float64))).image_u8
    assert prepared.shape == (28, 28) and prepared[:3].max() == 0 and prepared[-3:].max() == 0
    code, out, _ = _predict(capsys, "--model", str(checkpoint), str(tmp_path))
    assert code == 0
    # Exactly the model's answers on the preprocessed tensors ...
    stack = np.stack(
        [
            preprocess(Loaded("x", np.asarray(Image.open(p), dtype=np.float64))).image_u8
            for p in sorted(tmp_path.glob("*.png"))
        ]
    )
    on_tensors = predict_logits(model, torch.from_numpy(stack), 100).argmax(dim=1)
    assert _top1(out) == on_tensors.tolist()
    # ... and mostly the answers on the originals.
    assert (on_tensors == expected).float().mean() >= 0.75


def _framed(image: np.ndarray, framing: Framing) -> np.ndarray:
    return preprocess(Loaded("a", image.astype(np.float64)), "auto", framing).image_u8


@pytest.mark.parametrize("dataset", [MNIST, FASHION_MNIST])
def test_framing_finds_the_content_wherever_and_however_large_it_is_drawn(trained, dataset):
    """An image framed as the data set frames its images comes back the same from a larger
    sheet, off-centre, with margins, inverted, or drawn 3x larger: the content is found,
    scaled to the data set's size and placed as its images are."""
    framing = dataset.framing
    for image in trained[2].numpy()[:8]:
        drawn = _framed(image, framing)  # the data set's size, placed as its images are
        content = drawn[drawn.any(axis=1)][:, drawn.any(axis=0)]
        assert max(content.shape) == framing.content_px
        # Framing again may move a digit by a pixel (its centre of mass, now of rounded
        # pixels, rounds the other way): the reference is the drawn image framed.
        reference = _framed(drawn, framing)
        sheet = on_sheet(drawn, (120, 200), 7, 150)  # off-centre, wide margins
        assert np.array_equal(_framed(sheet, framing), reference)
        assert np.array_equal(_framed(255.0 - sheet, framing), reference)  # ink on paper
        big = drawn.repeat(3, axis=0).repeat(3, axis=1)  # shrunk back by 3x3 means
        assert np.array_equal(_framed(on_sheet(big, (300, 90), 5, 2), framing), reference)
        # Fitting the whole sheet instead leaves a small glyph in a wide margin.
        whole = preprocess(Loaded("a", sheet)).image_u8
        assert not np.array_equal(whole, reference)


def test_digits_are_placed_by_their_centre_of_mass_and_blank_images_by_the_canvas():
    framing = MNIST.framing
    stroke = np.zeros((40, 40))
    stroke[5:25, 10:12] = 255.0  # a bar 20 tall, 2 wide, on the left of its sheet
    stroke[5:7, 10:20] = 255.0  # and a lighter top: mass left of the box's centre
    framed = _framed(stroke, framing).astype(np.float64)
    ys, xs = np.nonzero(framed)
    weights = framed[ys, xs]
    assert abs(np.average(ys, weights=weights) - 13.5) <= 0.5
    assert abs(np.average(xs, weights=weights) - 13.5) <= 0.5
    blank = np.full((50, 50), 30.0)
    blank[10, 10] = 40.0  # contrast under MIN_CONTRAST: no content, the canvas fit
    assert np.array_equal(_framed(blank, framing), preprocess(Loaded("b", blank)).image_u8)


def _checkpoint_with_names(tmp_path: Path, names: list[str]) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    spec = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.2, pixel_std=0.3)
    config = model_config(hidden_sizes=(16,), dropout=0.0)
    model = build_model(config, spec).eval()
    checkpoint = tmp_path / "named.pt"
    save_checkpoint(checkpoint, model, config, spec, names, make_params(), {})
    return checkpoint, model


def test_predict_frames_as_the_models_data_set_unless_told_to_fit_the_canvas(tmp_path, capsys):
    """A model whose class names are MNIST's frames each file as MNIST's digits; --fit
    canvas fits the whole image."""
    checkpoint, model = _checkpoint_with_names(tmp_path, list(DIGIT_NAMES))
    images = make_images(6, 4)[0].numpy()
    folder = tmp_path / "sheets"
    folder.mkdir()
    sheets = [on_sheet(image, (90, 70), 3 * i, 40 - 5 * i) for i, image in enumerate(images)]
    for i, sheet in enumerate(sheets):
        _write_png(folder / f"{i}.png", sheet.astype(np.uint8))
    for choice, framing in (("dataset", MNIST.framing), ("canvas", None)):
        args = ["--model", str(checkpoint), "--fit", choice, str(folder)]
        code, out, err = _predict(capsys, *args)
        assert (code, err) == (0, "")
        stack = np.stack([preprocess(Loaded("s", s), "auto", framing).image_u8 for s in sheets])
        logits = predict_logits(model, torch.from_numpy(stack), 100)
        assert _top1(out) == logits.argmax(dim=1).tolist()
        probabilities = [r["top"][0]["probability"] for r in json.loads(out)]
        assert probabilities == [round(p, 6) for p in logits.softmax(1).max(1).values.tolist()]


def test_npy_and_idx_inputs(tmp_path, capsys, trained):
    checkpoint, _, images, expected = trained
    array = images.numpy()
    np.save(tmp_path / "a_uint8.npy", array[0])
    np.save(tmp_path / "b_unit.npy", array[1].astype(np.float32) / 255)
    np.save(tmp_path / "c_float255.npy", array[2].astype(np.float64))
    _write_idx(tmp_path / "d-images-idx3-ubyte.gz", array[3:10], gzipped=True)
    _write_idx(tmp_path / "e.idx", array[10:], gzipped=False)
    code, out, err = _predict(capsys, "--model", str(checkpoint), str(tmp_path))
    assert (code, err) == (0, "")
    names = [Path(r["file"]).name for r in json.loads(out)]
    assert names[:4] == ["a_uint8.npy", "b_unit.npy", "c_float255.npy", "d-images-idx3-ubyte.gz[0]"]
    assert names[-1] == f"e.idx[{TEST_ROWS - 11}]"
    assert _top1(out) == expected.tolist()


def test_bad_inputs_are_one_line_each_and_the_rest_is_predicted(tmp_path, capsys, trained):
    checkpoint, _, images, expected = trained
    good = _write_png(tmp_path / "good.png", images[0].numpy())
    (tmp_path / "text.png").write_text("not an image")
    np.save(tmp_path / "cube.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), dtype=np.uint8))
    np.save(tmp_path / "ints.npy", np.zeros((28, 28), dtype=np.int64))
    np.save(tmp_path / "range.npy", np.full((28, 28), 300.0))
    (tmp_path / "short-ubyte").write_bytes(struct.pack(">4i", 0x803, 5, 28, 28) + b"\0" * 10)
    (tmp_path / "labels-ubyte").write_bytes(struct.pack(">2i", 0x801, 1) + b"\1")
    missing = tmp_path / "missing.png"
    code, out, err = _predict(capsys, "--model", str(checkpoint), str(tmp_path), str(missing))
    assert code == 1
    assert _top1(out) == [expected[0].item()] and json.loads(out)[0]["file"] == str(good)
    lines = err.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("predict: error: ") for line in lines)
    by_file = {Path(line.split(": ")[2]).name: line for line in lines}
    assert "cannot read image" in by_file["text.png"]
    assert "expected one (H, W) image array, got shape (2, 28, 28)" in by_file["cube.npy"]
    assert "empty image (5x0 pixels)" in by_file["empty.npy"]
    assert "dtype int64 unsupported" in by_file["ints.npy"]
    assert "expected [0, 1] or [0, 255]" in by_file["range.npy"]
    assert "header says 5 images" in by_file["short-ubyte"]
    assert "not an idx image file" in by_file["labels-ubyte"]
    assert "no such file" in by_file["missing.png"]


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, trained):
    _, _, images, _ = trained
    png = _write_png(tmp_path / "a.png", images[0].numpy())
    (tmp_path / "model.pt").write_bytes(b"garbage")
    code, out, err = _predict(capsys, "--model", str(tmp_path / "model.pt"), str(png))
    assert code == 1 and out == ""
    assert err.startswith("predict: error: ") and "not a readable checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def _exported(tmp_path: Path, model: torch.nn.Module, images: torch.Tensor) -> list[Path]:
    """The export stage's two files of `model` (made as it makes them)."""
    meta = formats.metadata(CLASSES, "mnist")
    ts, onnx = tmp_path / "model.ts", tmp_path / "model.onnx"
    ts.write_bytes(formats.torchscript_bytes(model, images, meta))
    onnx.write_bytes(formats.onnx_bytes(model, images, meta))
    return [ts, onnx]


def test_exported_files_give_the_checkpoints_predictions(tmp_path, capsys, trained):
    checkpoint, model, images, expected = trained
    folder = _png_folder(tmp_path / "images", images)
    # The checkpoint's own class names are no data set's: both fit whole images.
    args = ["--top-k", "3", "--fit", "canvas", str(folder)]
    code, out, err = _predict(capsys, "--model", str(checkpoint), *args)
    assert (code, err) == (0, "")
    reference = json.loads(out)
    for path in _exported(tmp_path, model, images):
        code, out, err = _predict(capsys, "--model", str(path), *args)
        assert (code, err) == (0, ""), err
        records = json.loads(out)
        assert _top1(out) == expected.tolist()
        for got, want in zip(records, reference, strict=True):
            assert [t["name"] for t in got["top"]] == [t["name"] for t in want["top"]]
            for g, w in zip(got["top"], want["top"], strict=True):
                assert abs(g["probability"] - w["probability"]) <= 1e-5


def test_exported_files_refuse_mc_dropout_and_other_devices_in_one_line(tmp_path, capsys, trained):
    _, model, images, _ = trained
    png = _write_png(tmp_path / "a.png", images[0].numpy())
    for path in _exported(tmp_path, model, images):
        code, out, err = _predict(capsys, "--model", str(path), "--mc-samples", "3", str(png))
        assert code == 1 and out == "" and len(err.splitlines()) == 1
        assert f"--mc-samples needs the checkpoint (models/model.pt): a {path.suffix}" in err
        code = main(["predict", "--device", "cuda", "--model", str(path), str(png)])
        err = capsys.readouterr().err
        assert code == 1 and f"--device cuda: {path.suffix} files run on the CPU here" in err


def _all_probabilities(output: str) -> torch.Tensor:
    records = json.loads(output)
    probs = torch.zeros(len(records), 10, dtype=torch.float64)
    for row, record in enumerate(records):
        for top in record["top"]:
            probs[row, top["class"]] = top["probability"]
    return probs


@pytest.mark.parametrize(
    ("names", "setting", "mirrored"),
    [
        (list(FASHION_MNIST.class_names), "auto", True),  # clothes may be mirrored
        (list(FASHION_MNIST.class_names), "false", False),
        (list(DIGIT_NAMES), "auto", False),  # a mirrored 2 is not a 2
        (CLASSES, "auto", False),  # no known data set: only when asked
        (CLASSES, "true", True),
    ],
)
def test_test_time_flip_averages_with_the_mirror_where_allowed(
    tmp_path, capsys, names, setting, mirrored
):
    checkpoint, model = _checkpoint_with_names(tmp_path, names)
    images = make_images(8, 6)[0]
    idx = _write_idx(tmp_path / "x-ubyte", images.numpy(), gzipped=False)
    argv = ["--model", str(checkpoint), "--top-k", "10", "--fit", "canvas", "--tta-hflip"]
    code, out, err = _predict(capsys, *argv, setting, str(idx))
    assert (code, err) == (0, ""), err
    want = predict_logits(model, images, 100, hflip=mirrored).softmax(dim=1).double()
    assert torch.allclose(_all_probabilities(out), want, atol=2e-6)
    if mirrored:  # and the mirror made a difference
        plain = predict_logits(model, images, 100).softmax(dim=1).double()
        assert not torch.allclose(_all_probabilities(out), plain, atol=1e-4)


def test_test_time_flip_of_digits_is_refused_in_one_line(tmp_path, capsys):
    checkpoint, _ = _checkpoint_with_names(tmp_path, list(DIGIT_NAMES))
    png = _write_png(tmp_path / "a.png", make_images(1, 6)[0][0].numpy())
    code, out, err = _predict(capsys, "--model", str(checkpoint), "--tta-hflip", "true", str(png))
    assert (code, out) == (1, "")
    assert err.startswith("predict: error: --tta-hflip: mnist images must never be mirrored")
    assert len(err.splitlines()) == 1


def _evaluate_metrics(path: Path, temperature: object) -> Path:
    """An evaluate metrics file as the stage writes it with evaluate.calibrate."""
    split = {"accuracy": 0.9, "ece": 0.01, "temperature": temperature}
    path.write_text(json.dumps({"valid": split, "test": split}))
    return path


def test_calibration_scales_the_probabilities_by_evaluates_temperature(tmp_path, capsys, trained):
    checkpoint, model, images, expected = trained
    folder = _png_folder(tmp_path / "images", images)
    temperature = 2.5
    metrics_file = _evaluate_metrics(tmp_path / "evaluate.json", temperature)
    args = ["--top-k", "10", "--fit", "canvas", str(folder)]
    scaled = (predict_logits(model, images, 100) / temperature).softmax(dim=1)
    exports = _exported(tmp_path, model, images)
    for path in [checkpoint, *exports]:
        plain = _predict(capsys, "--model", str(path), *args)
        code, out, err = _predict(
            capsys, "--model", str(path), "--calibration", str(metrics_file), *args
        )
        assert (code, err) == (0, ""), err
        assert _top1(out) == _top1(plain[1]) == expected.tolist()  # the argmax never moves
        for record, want in zip(json.loads(out), scaled, strict=True):
            got = {t["class"]: t["probability"] for t in record["top"]}
            assert got == pytest.approx(dict(enumerate(want.tolist())), abs=2e-6)
        # T > 1 lowers every top-1 confidence the model had.
        top_plain = [r["top"][0]["probability"] for r in json.loads(plain[1])]
        top_scaled = [r["top"][0]["probability"] for r in json.loads(out)]
        assert all(s < p for s, p in zip(top_scaled, top_plain, strict=True))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{", "not valid JSON"),
        ("[" * 100_000, "not valid JSON (nested too deeply)"),
        ('{"test": {"accuracy": 0.9}}', "no valid.temperature; give the evaluate stage's metrics"),
        (
            '{"valid": {"temperature": "1.5"}}',
            "valid.temperature must be a number in [0.05, 20.0], got '1.5'",
        ),
        (
            '{"valid": {"temperature": NaN}}',
            "valid.temperature must be a number in [0.05, 20.0], got nan",
        ),
        (
            '{"valid": {"temperature": 0}}',
            "valid.temperature must be a number in [0.05, 20.0], got 0",
        ),
        (
            '{"valid": {"temperature": true}}',
            "valid.temperature must be a number in [0.05, 20.0], got True",
        ),
        ('{"valid": {"temperature": 1e400}}', "got inf"),
    ],
)
def test_a_bad_calibration_file_is_one_line_before_any_work(
    tmp_path, capsys, trained, content, problem
):
    checkpoint, _, images, _ = trained
    png = _write_png(tmp_path / "a.png", images[0].numpy())
    metrics_file = tmp_path / "evaluate.json"
    if content is not None:
        metrics_file.write_text(content)
    out_file = tmp_path / "out.json"
    argv = ["--model", str(checkpoint), "--calibration", str(metrics_file), "--out", str(out_file)]
    code, out, err = _predict(capsys, *argv, str(png))
    assert (code, out) == (1, "") and len(err.splitlines()) == 1
    assert err.startswith(f"predict: error: {metrics_file}: ") and problem in err, err
    assert not out_file.exists()


def test_a_calibration_fifo_is_refused_without_blocking(tmp_path, capsys, trained):
    checkpoint, _, images, _ = trained
    png = _write_png(tmp_path / "a.png", images[0].numpy())
    fifo = tmp_path / "evaluate.json"
    os.mkfifo(fifo)
    code, _, err = _predict(
        capsys, "--model", str(checkpoint), "--calibration", str(fifo), str(png)
    )
    assert code == 1 and err == f"predict: error: {fifo}: is a FIFO, not a metrics file\n"


def test_csv_output_with_top_k_and_mc_dropout(tmp_path, capsys, trained):
    checkpoint, _, images, expected = trained
    for i in range(3):
        _write_png(tmp_path / f"{i}.png", images[i].numpy())
    out_file = tmp_path / "out" / "predictions.csv"
    out_file.parent.mkdir()  # predict makes no folders: a typo in --out is an error
    args = ["--model", str(checkpoint), "--top-k", "2", "--mc-samples", "5", "--format", "csv"]
    code, out, err = _predict(capsys, *args, "--out", str(out_file), str(tmp_path))
    assert (code, out, err) == (0, "", "")
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert list(rows[0]) == [
        "file",
        "inverted",
        "class_1",
        "name_1",
        "probability_1",
        "class_2",
        "name_2",
        "probability_2",
        "entropy",
        "mutual_information",
    ]
    assert [int(r["class_1"]) for r in rows] == expected[:3].tolist()
    assert all(r["name_1"] == CLASSES[int(r["class_1"])] for r in rows)
    for r in rows:
        assert float(r["probability_1"]) >= float(r["probability_2"])
        assert 0 <= float(r["mutual_information"]) <= float(r["entropy"]) <= np.log(10) + 1e-6


def test_mc_samples_without_dropout_says_so(tmp_path, capsys):
    checkpoint, model = _train(tmp_path, dropout=0.0)
    image = make_images(1, 5)[0]
    png = _write_png(tmp_path / "a.png", image[0].numpy())
    code, out, err = _predict(capsys, "--model", str(checkpoint), "--mc-samples", "3", str(png))
    assert code == 0 and err == "predict: the model has no dropout; --mc-samples skipped\n"
    record = json.loads(out)[0]
    assert "entropy" not in record
    assert record["top"][0]["class"] == predict_logits(model, image, 1).argmax().item()


@pytest.mark.slow
def test_python_dash_m_runs_the_same_command(tmp_path, trained):
    checkpoint, _, images, expected = trained
    png = _write_png(tmp_path / "a.png", images[0].numpy())
    argv = [sys.executable, "-m", "mnist_pipeline", "predict", "--device", "cpu"]
    result = subprocess.run(
        [*argv, "--model", str(checkpoint), "--format", "csv", str(png), str(tmp_path / "no.png")],
        env=python_env(base={}, PATH=""),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"predict: error: {tmp_path / 'no.png'}: no such file\n"
    assert int(next(csv.DictReader(io.StringIO(result.stdout)))["class_1"]) == expected[0]
