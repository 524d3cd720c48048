"""Hostile inputs to `predict`: image files, its options and its output path. Each is
refused in one line naming the file and the limit, in bounded memory and time; a bad
file is skipped (exit 1) and nothing is written where it should not be."""

import gzip
import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_pipeline.__main__ import main
from mnist_pipeline.data.registry import DIGIT_NAMES
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import check_replaceable
from mnist_pipeline.model.checkpoint import save_checkpoint
from mnist_pipeline.model.networks import InputSpec, build_model
from mnist_pipeline.predict import images as image_files
from mnist_pipeline.predict.images import MAX_IMAGE_PIXELS, MAX_IMAGES, read_images
from mnist_pipeline.testing import bounds
from mnist_pipeline.testing.bounds import MB, STAGE_BASE_RSS_KB, fails_within
from mnist_pipeline.testing.configs import make_params, model_config
from tests.support import REPO, python_env

SPEC = InputSpec(image_shape=(28, 28), num_classes=10, pixel_mean=0.1, pixel_std=0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = model_config(hidden_sizes=(8,), dropout=0.2)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model = build_model(config, SPEC)
    save_checkpoint(path, model, config, SPEC, list(DIGIT_NAMES), make_params(model=config), {})
    return path


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predict: error: "), err
    return lines[0]


def idx_header(rows: int, height: int, width: int) -> bytes:
    return struct.pack(">4i", 0x00000803, rows, height, width)


def png(path: Path, size: tuple[int, int] = (28, 28)) -> Path:
    Image.new("L", size, 0).save(path)
    return path


# --- files ---------------------------------------------------------------------------------


def test_gzipped_idx_claiming_a_huge_image_stops_at_its_header(tmp_path):
    # 261 kB on disk would hold one 16384x16384 image: 268 MB of pixels (4.4 GB as floats).
    path = tmp_path / "bomb-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_header(1, 16384, 16384))
        f.write(bytes(16384 * 16384))
    assert path.stat().st_size < 400_000
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert str(error) == (
        f"{path}: 16384x16384 pixels, over the limit of {MAX_IMAGE_PIXELS:,} per image"
    )


def test_gzipped_idx_with_more_content_than_its_header_stops_there(tmp_path):
    # The header says 10 images; the stream inflates to 200 MB: read one byte past 10.
    path = tmp_path / "long-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_header(10, 28, 28))
        f.write(bytes(200 * MB))
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert str(error) == (
        f"{path}: header says 10 images of 28x28 pixels but the file holds more pixel bytes"
    )


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (idx_header(MAX_IMAGES + 1, 28, 28), f"{MAX_IMAGES + 1} images, over the limit"),
        (idx_header(90_000, 40, 40), "over the limit of 100000000 bytes"),
        (idx_header(-1, 28, 28), "negative sizes in its header"),
    ],
)
def test_idx_headers_out_of_bounds_are_refused_before_reading_on(tmp_path, header, problem):
    path = tmp_path / "x-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1000)))
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert problem in str(error)


def test_a_cut_gzip_stream_is_named(tmp_path):
    path = tmp_path / "cut-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(10, 28, 28) + bytes(7840))[:-8])  # no trailer
    with pytest.raises(PipelineError) as info:
        read_images(path)
    assert str(info.value).endswith("cannot read idx file (the gzip stream is cut short)")


def test_a_link_to_a_device_is_refused_without_reading(tmp_path):
    path = tmp_path / "zero-ubyte"
    path.symlink_to("/dev/zero")
    error = fails_within(lambda: read_images(path), max_traced_bytes=1 * MB)
    assert str(error) == f"{path}: is a character device, not an image file"


def test_a_fifo_given_directly_does_not_hang(tmp_path, capsys, checkpoint):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result: dict[str, object] = {}
    # Nothing ever writes to the FIFO: a blocking open would wait forever, so run predict
    # in a thread and wait for it on an event, with a generous bound.
    worker = threading.Thread(
        target=lambda: result.update(out=predict(capsys, "--model", str(checkpoint), str(fifo)))
    )
    worker.daemon = True
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "predict blocked on a FIFO"
    code, out, err = result["out"]
    assert code == 1 and out.strip() == "[]"
    assert one_error(err).endswith(f"{fifo}: is a FIFO, not an image file")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny baseline JPEG whose frame header says `width` x `height`."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # frame header: marker, length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_jpeg_whose_header_claims_13000_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_claiming(13000, 13000))
    assert path.stat().st_size < 1000
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert str(error) == (
        f"{path}: 13000x13000 pixels, over the limit of {MAX_IMAGE_PIXELS:,} per image"
    )


def test_a_header_past_pillows_own_limit_is_refused_in_our_words(tmp_path):
    # Past twice Pillow's limit, Image.open itself raises (not only warns).
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_claiming(20000, 20000))
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert f"{path}: over the limit of {MAX_IMAGE_PIXELS:,} pixels per image (" in str(error)


def test_a_real_png_past_the_pixel_limit_is_refused(tmp_path):
    path = png(tmp_path / "big.png", (5000, 4000))  # compresses to ~20 kB
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert "5000x4000 pixels, over the limit" in str(error)


def test_an_npy_header_claiming_more_than_the_file_holds_is_refused(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((28, 28), dtype=np.float64))
    data = buffer.getvalue().replace(b"(28, 28)", b"(999, 99)")  # same header length
    path = tmp_path / "x.npy"
    path.write_bytes(data)
    error = fails_within(lambda: read_images(path), max_traced_bytes=5 * MB)
    assert str(error) == f"{path}: its header says (999, 99) but the file is shorter"


def test_a_file_over_the_byte_limit_is_refused_from_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "MAX_FILE_BYTES", 1000)
    path = png(tmp_path / "noise.png")
    path.write_bytes(path.read_bytes() + bytes(2000))
    with pytest.raises(PipelineError, match=r"bytes, over the limit of 1000 for an image file$"):
        read_images(path)


def test_more_images_than_a_run_allows_are_refused(tmp_path, capsys, checkpoint, monkeypatch):
    monkeypatch.setattr(image_files, "MAX_IMAGES", 3)
    for index in range(4):
        png(tmp_path / f"{index}.png")
    code, out, err = predict(capsys, "--model", str(checkpoint), str(tmp_path))
    assert (code, out) == (1, "")
    assert one_error(err).endswith("more than 3 images in one run; split the input")


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--mc-samples", "1001"], "--mc-samples must be in [0, 1000], got 1001"),
        (["--mc-samples", "-1"], "--mc-samples must be in [0, 1000], got -1"),
        (["--top-k", "0"], "--top-k must be >= 1, got 0"),
    ],
)
def test_options_out_of_range_are_refused(tmp_path, capsys, checkpoint, args, problem):
    image = png(tmp_path / "a.png")
    code, out, err = predict(capsys, "--model", str(checkpoint), *args, str(image))
    assert (code, out) == (1, "")
    assert one_error(err) == f"predict: error: {problem}"


def test_mc_passes_over_all_images_are_bounded(tmp_path, capsys, checkpoint):
    path = tmp_path / "many-ubyte"
    path.write_bytes(idx_header(10_001, 28, 28) + bytes(10_001 * 784))
    code, out, err = predict(capsys, "--model", str(checkpoint), "--mc-samples", "1000", str(path))
    assert (code, out) == (1, "")
    assert one_error(err).endswith(
        "--mc-samples 1000 x 10001 images is over the limit of 10,000,000 passes; use fewer "
        "samples or fewer images"
    )


def test_overflowing_weights_give_an_error_not_nan(tmp_path, capsys):
    config = model_config(hidden_sizes=(8,), dropout=0.0)
    model = build_model(config, SPEC)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(3e38)  # finite, but the logits overflow to inf
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, config, SPEC, list(DIGIT_NAMES), make_params(model=config), {})
    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 200).save(image)
    code, out, err = predict(capsys, "--model", str(path), str(image))
    assert (code, out) == (1, "")
    assert one_error(err).endswith("the model gives NaN or infinite probabilities; retrain it")


def test_file_names_with_control_characters_are_escaped(tmp_path, capsys, checkpoint):
    shown = tmp_path / "ok\x1b]0;pwned\x07\u202e.png"
    png(shown)
    broken = tmp_path / "bad\x1b[2J\nname.png"
    broken.write_bytes(b"not an image")
    code, out, err = predict(
        capsys, "--model", str(checkpoint), "--format", "csv", str(shown), str(broken)
    )
    assert code == 1
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "bad\\x1b[2J" in one_error(err)
    assert "ok\\x1b]0;pwned\\x07\\u202e.png" in out
    code, out, _ = predict(capsys, "--model", str(checkpoint), str(shown))
    assert code == 0 and out.isascii() and "\\u001b]0;pwned\\u0007\\u202e" in out


# --- the output path -------------------------------------------------------------------------


def test_out_never_replaces_a_link(tmp_path, capsys, checkpoint):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    image = png(tmp_path / "a.png")
    code, out, err = predict(capsys, "--model", str(checkpoint), "--out", str(link), str(image))
    assert (code, out) == (1, "")
    assert one_error(err).endswith(
        f"{link}: is a symbolic link; refusing to replace it with the output"
    )
    assert link.is_symlink() and target.read_text() == "keep"
    assert bounds.leftovers(tmp_path) == []


def test_out_never_replaces_a_fifo_and_does_not_block_on_it(tmp_path, capsys, checkpoint):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    image = png(tmp_path / "a.png")
    code, _, err = predict(capsys, "--model", str(checkpoint), "--out", str(fifo), str(image))
    assert code == 1 and one_error(err).endswith(
        "is a FIFO; refusing to replace it with the output"
    )
    assert fifo.is_fifo()


def test_a_device_is_never_replaced():
    # Only the check: the output is never written anywhere near /dev/null.
    with pytest.raises(PipelineError, match=r"^/dev/null: is a character device; refusing"):
        check_replaceable(Path("/dev/null"))


def test_out_in_a_missing_folder_makes_no_folder(tmp_path, capsys, checkpoint):
    image = png(tmp_path / "a.png")
    out_file = tmp_path / "typo" / "out.json"
    code, _, err = predict(capsys, "--model", str(checkpoint), "--out", str(out_file), str(image))
    assert code == 1 and one_error(err).endswith(f"its folder {out_file.parent} does not exist")
    assert not out_file.parent.exists()


@pytest.mark.slow
def test_predict_on_a_gzipped_bomb_in_a_subprocess_stays_small(tmp_path, checkpoint):
    path = tmp_path / "bomb-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_header(1, 16384, 16384) + bytes(16384 * 16384))
    run = bounds.run_measured(
        ["-m", "mnist_pipeline", "predict", "--model", str(checkpoint), str(path)], REPO
    )
    assert run.returncode == 1 and "over the limit of" in run.stderr
    assert run.peak_rss_kb < STAGE_BASE_RSS_KB + 50_000, run.peak_rss_kb


def test_the_module_runs_as_documented():
    result = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "predict", "--help"],
        env=python_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "--mc-samples" in result.stdout
