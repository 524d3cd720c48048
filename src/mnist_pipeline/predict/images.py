"""Image files -> uint8 (N, 28, 28) light-on-dark arrays, exactly what the model trained on.

Readers (by file name; `read_images` of a file of unknown kind tries Pillow):

    PNG, JPEG, BMP, GIF, TIFF, WebP   any size and mode, via Pillow (first frame)
    .npy                              one (H, W) array: uint8, or float in [0, 1] or [0, 255]
    idx (*-ubyte, *.idx, optionally .gz)  every image of an idx3 ubyte file (N, H, W)

Preprocessing (`preprocess`), in this order, on float pixels in [0, 255]:

 1. Greyscale: Pillow's "L" conversion (ITU-R 601-2 luma) for colour images; transparent
    pixels are composited onto white first (a drawing on a transparent sheet is a drawing
    on paper).
 2. Polarity: MNIST and Fashion-MNIST are light ink on a dark (0) background. `auto`
    inverts (255 - pixel) when the image's border is mostly bright, i.e. when the median
    of its outermost ring of pixels is above 127.5 (dark ink on light paper); `always`
    and `never` force the choice.
 3. Framing, as the model's data set was made (`Framing` in data/registry.py; `predict
    --fit dataset`, the default): the content, i.e. the box of the pixels brighter than
    the background (the median of the border after step 2) by more than INK_FRACTION of
    the image's contrast, is scaled keeping its aspect ratio until its longer side is
    the data set's size (20 pixels for MNIST's digits, 28 for Fashion-MNIST's products;
    not resampled when it already is), then placed on a 28x28 canvas filled with the
    background, with its centre of mass (digits) or its box's centre (products) in the
    middle. So a digit on a large sheet, off-centre, with margins, comes out as MNIST's
    digits do. An image with no content (contrast under MIN_CONTRAST) or a model of no
    known data set falls back to the whole image (`--fit canvas`): an image of exactly
    28x28 pixels is used as is, any other is scaled, keeping its aspect ratio, until its
    longer side is 28 pixels, then centred on the background-filled canvas.
    Resampling: a box filter when shrinking (each output pixel averages the input pixels
    it covers), bilinear when enlarging.
 4. Rounding: to the nearest integer, clipped to 0..255, as uint8 (the training data's
    dtype and range).

Limits (each a one-line error naming the file): a file of at most MAX_FILE_BYTES, regular
(a FIFO or a device, or a link to one, is refused before it is read); an image of at most
MAX_IMAGE_PIXELS, checked from its header before any pixel is decoded (far below Pillow's
own bomb limit of 89 million: a 28x28 classifier needs no more than a photo's worth); a
gzipped idx file decompressed no further than what its header's size needs, within
MAX_FILE_BYTES; at most MAX_IMAGES images per run, files found in folders included.

Resizing can only approximate the original pixels (an image stretched to another aspect
ratio keeps that aspect ratio here), so the model's answer on a resized copy can differ
from its answer on the 28x28 original near a decision boundary.
"""

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_pipeline.data.registry import IMAGE_SHAPE, Framing
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.fileio import read_regular_file

Invert = Literal["auto", "always", "never"]
INVERT_CHOICES: tuple[Invert, ...] = ("auto", "always", "never")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
NPY_SUFFIX = ".npy"
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
GZIP_MAGIC = b"\x1f\x8b"
BRIGHT_BORDER = 127.5  # auto inverts when the border's median pixel is above this
# Content: pixels brighter than the background by more than this share of the image's
# contrast (its brightest pixel minus the background); JPEG noise and paper texture stay
# under it, the faint edges of a stroke or a garment above.
INK_FRACTION = 0.1
MIN_CONTRAST = 16.0  # an image whose brightest pixel is closer to its background is blank
MAX_PIXEL = 255.0
MAX_FILE_BYTES = 100_000_000  # an idx file of 100,000 28x28 images is 78 MB
MAX_IMAGE_PIXELS = 4096 * 4096  # one image; a 12-megapixel phone photo fits
MAX_IMAGES = 100_000  # per run: every image is held, 28x28, until the batch is predicted


@dataclass(frozen=True)
class Loaded:
    """One image as read: pixels (H, W) in [0, 255] (float64; uint8 views of the file for
    idx, converted one image at a time by `preprocess`), and its name for the output."""

    name: str
    pixels: np.ndarray


@dataclass(frozen=True)
class Prepared:
    """One image ready for the model: uint8 (28, 28), and whether step 2 inverted it."""

    name: str
    image_u8: np.ndarray
    inverted: bool


def is_idx_name(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(("ubyte", ".idx"))


def is_image_name(path: Path) -> bool:
    """Whether a file found in a folder is one `read_images` reads (by its name)."""
    suffix = path.suffix.lower()
    return suffix in PILLOW_SUFFIXES or suffix == NPY_SUFFIX or is_idx_name(path)


def find_files(paths: list[Path]) -> Iterator[Path]:
    """The given files, and the image files under the given folders (recursively, sorted),
    at most MAX_IMAGES in all. A path that does not exist is yielded as is: reading it
    reports the error."""
    count = 0
    for path in paths:
        if path.is_dir():
            found = []
            for candidate in path.rglob("*"):
                if candidate.is_file() and is_image_name(candidate):
                    count += 1
                    _check_count(count, path)
                    found.append(candidate)
            yield from sorted(found)
        else:
            count += 1
            _check_count(count, path)
            yield path


def _check_count(count: int, where: Path) -> None:
    if count > MAX_IMAGES:
        raise PipelineError(f"{where}: more than {MAX_IMAGES} images in one run; split the input")


def read_images(path: Path) -> list[Loaded]:
    """Every image in one file (one, or N for idx); any problem is a PipelineError."""
    data = read_regular_file(path, MAX_FILE_BYTES, "an image file")
    if path.suffix.lower() == NPY_SUFFIX:
        images = [Loaded(str(path), _read_npy(path, data))]
    elif is_idx_name(path):
        images = [Loaded(f"{path}[{i}]", image) for i, image in enumerate(_read_idx(path, data))]
    else:
        images = [Loaded(str(path), _read_pillow(path, data))]
    for image in images:
        if image.pixels.size == 0:
            height, width = image.pixels.shape
            raise PipelineError(f"{image.name}: empty image ({width}x{height} pixels)")
    return images


def _read_pillow(path: Path, data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit, far above ours, which is checked next.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            _check_pixels(path, *image.size)
            image.load()
            return _pillow_grey(image)
    except UnidentifiedImageError:  # its message names the in-memory stream, not the file
        raise PipelineError(f"{path}: cannot read image (not an image Pillow knows)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PipelineError(f"{path}: cannot read image ({_short(exc)})") from None
    except Image.DecompressionBombError as exc:  # Pillow's own, past twice its limit
        raise PipelineError(
            f"{path}: over the limit of {MAX_IMAGE_PIXELS:,} pixels per image ({_short(exc)})"
        ) from None


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise PipelineError(
            f"{path}: {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} per image"
        )


def _pillow_grey(image: Image.Image) -> np.ndarray:
    """Float pixels (H, W) in [0, 255] of any Pillow mode (step 1 of the module docstring)."""
    if image.mode.startswith("I;16"):  # 16-bit greyscale: 0..65535
        return np.asarray(image, dtype=np.float64) * (MAX_PIXEL / 65535.0)
    if image.mode in ("I", "F"):  # 32-bit int or float greyscale: the .npy rule
        return _float_range(np.asarray(image, dtype=np.float64), "pixels")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float64)


def _read_npy(path: Path, data: bytes) -> np.ndarray:
    try:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(stream)
        # numpy allocates what the header says before reading: check it against the file.
        if len(shape) != 2:
            raise PipelineError(f"{path}: expected one (H, W) image array, got shape {shape}")
        _check_pixels(path, shape[1], shape[0])
        if shape[0] * shape[1] * dtype.itemsize > len(data):
            raise PipelineError(f"{path}: its header says {shape} but the file is shorter")
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read .npy array ({_short(exc)})") from None
    if array.dtype == np.uint8:
        return array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.floating):
        raise PipelineError(f"{path}: dtype {array.dtype} unsupported; expected uint8 or float")
    return _float_range(array.astype(np.float64), str(path))


def _float_range(array: np.ndarray, where: str) -> np.ndarray:
    """Floats in [0, 1] are scaled to [0, 255]; floats in [0, 255] are kept."""
    if array.size == 0:
        return array
    if not np.isfinite(array).all():
        raise PipelineError(f"{where}: pixels must be finite")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > MAX_PIXEL:
        raise PipelineError(
            f"{where}: float pixels in [{low:g}, {high:g}]; expected [0, 1] or [0, 255]"
        )
    return array * MAX_PIXEL if high <= 1.0 else array


def _read_idx(path: Path, data: bytes) -> np.ndarray:
    """uint8 (N, H, W) of an idx3 ubyte file, gzipped or not (told by its first bytes);
    a gzipped one is decompressed only as far as its header's size needs."""
    gzipped = data[:2] == GZIP_MAGIC
    try:
        if gzipped:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            header = decompressor.decompress(data, 16)
        else:
            header = data[:16]
        if len(header) < 16 or struct.unpack(">i", header[:4])[0] != IDX_IMAGES_MAGIC:
            raise PipelineError(f"{path}: not an idx image file (expected magic 0x00000803)")
        rows, height, width = struct.unpack(">3i", header[4:16])
        if min(rows, height, width) < 0:
            raise PipelineError(f"{path}: negative sizes in its header")
        if rows > MAX_IMAGES:
            raise PipelineError(f"{path}: {rows} images, over the limit of {MAX_IMAGES} per run")
        _check_pixels(path, width, height)
        needed = rows * height * width
        if 16 + needed > MAX_FILE_BYTES:
            raise PipelineError(
                f"{path}: {rows} images of {height}x{width} pixels, over the limit of "
                f"{MAX_FILE_BYTES} bytes"
            )
        if gzipped:
            # One byte more than needed: a longer content is then told from an exact one.
            pixels = decompressor.decompress(decompressor.unconsumed_tail, needed + 1)
        else:
            pixels = data[16:]
    except (zlib.error, EOFError) as exc:
        raise PipelineError(f"{path}: cannot read idx file ({_short(exc)})") from None
    if gzipped and len(pixels) <= needed and not decompressor.eof:
        raise PipelineError(f"{path}: cannot read idx file (the gzip stream is cut short)")
    if len(pixels) != needed:
        held = len(pixels) if len(pixels) <= needed or not gzipped else "more"
        raise PipelineError(
            f"{path}: header says {rows} images of {height}x{width} pixels but the file "
            f"holds {held} pixel bytes"
        )
    if rows == 0:
        raise PipelineError(f"{path}: the idx file holds no images")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(rows, height, width)


def preprocess(image: Loaded, invert: Invert = "auto", framing: Framing | None = None) -> Prepared:
    """Steps 2-4 of the module docstring: light-on-dark uint8 (28, 28). `framing`: the
    model's data set's (None: the whole image is fitted)."""
    pixels = image.pixels.astype(np.float64, copy=False)
    flip = invert == "always" or (invert == "auto" and _border_median(pixels) > BRIGHT_BORDER)
    if flip:
        pixels = MAX_PIXEL - pixels
    framed = None if framing is None else _frame(pixels, framing)
    if framed is not None:
        pixels = framed
    elif pixels.shape != IMAGE_SHAPE:
        pixels = _fit(pixels, IMAGE_SHAPE)
    image_u8 = np.clip(np.rint(pixels), 0, MAX_PIXEL).astype(np.uint8)
    return Prepared(image.name, image_u8, flip)


def _frame(pixels: np.ndarray, framing: Framing) -> np.ndarray | None:
    """Step 3 with `framing`: the content scaled and placed on the canvas; None when the
    image has no content."""
    background = _border_median(pixels)
    contrast = float(pixels.max()) - background
    if contrast < MIN_CONTRAST:
        return None
    ink = pixels > background + INK_FRACTION * contrast
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    content = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    longer = max(content.shape)
    if longer != framing.content_px:
        scale = framing.content_px / longer
        height, width = (max(1, round(side * scale)) for side in content.shape)
        content = _resize(content, (height, width), shrinking=scale < 1)
    height, width = content.shape
    canvas = np.full(IMAGE_SHAPE, background, dtype=np.float64)
    if framing.by_mass:
        weights = np.clip(content - background, 0, None)
        total = weights.sum()
        mass_y = float(weights.sum(axis=1) @ np.arange(height)) / total
        mass_x = float(weights.sum(axis=0) @ np.arange(width)) / total
        top = round((IMAGE_SHAPE[0] - 1) / 2 - mass_y)
        left = round((IMAGE_SHAPE[1] - 1) / 2 - mass_x)
        # Never past the canvas: a lopsided glyph keeps all its ink.
        top = min(max(top, 0), IMAGE_SHAPE[0] - height)
        left = min(max(left, 0), IMAGE_SHAPE[1] - width)
    else:  # an odd margin: its larger half before the content, as Fashion-MNIST's
        top, left = (IMAGE_SHAPE[0] - height + 1) // 2, (IMAGE_SHAPE[1] - width + 1) // 2
    canvas[top : top + height, left : left + width] = content
    return canvas


def _border_median(pixels: np.ndarray) -> float:
    """Median of the outermost ring of pixels (the whole image if it is 1-2 pixels thin)."""
    if min(pixels.shape) <= 2:
        return float(np.median(pixels))
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return float(np.median(ring))


def _fit(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scale (H, W) so that it fits `shape` keeping its aspect ratio, then centre it on a
    canvas of `shape` filled with its border median."""
    height, width = pixels.shape
    scale = min(shape[0] / height, shape[1] / width)
    new_height = min(shape[0], max(1, round(height * scale)))
    new_width = min(shape[1], max(1, round(width * scale)))
    resized = _resize(pixels, (new_height, new_width), shrinking=scale < 1)
    canvas = np.full(shape, _border_median(pixels), dtype=np.float64)
    top, left = (shape[0] - new_height) // 2, (shape[1] - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas


def _resize(pixels: np.ndarray, shape: tuple[int, int], shrinking: bool) -> np.ndarray:
    """(H, W) float pixels resampled to `shape`: box filter when shrinking, bilinear when
    enlarging."""
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    # Mode "F" (float32) keeps the fraction of each averaged pixel until the one rounding.
    image = Image.fromarray(pixels.astype(np.float32)).resize((shape[1], shape[0]), resample)
    return np.asarray(image, dtype=np.float64)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
