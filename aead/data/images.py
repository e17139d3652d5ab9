"""Image files -> uint8 arrays: finding them in a folder, decoding with Pillow (any mode, 8 or
16 bit), converting to the configured channels, resizing with a named interpolation, and the
on-disk cache of a decoded folder (keyed by its files and the settings)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aead.data.lookup import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
CACHE_FORMAT = 1
_GRAY_MODES = {"1", "L", "LA", "I", "F"}  # and every "I;16..." mode


@dataclass(frozen=True)
class Conform:
    """What every image becomes: `channels` 1 or 3 (None: the files' own; 3 when any is in
    colour) and `size` (height, width) (None: the files' own size, which must then agree)."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(
                f"data.interpolation={self.interpolation}: not accepted; choose one of "
                f"{', '.join(INTERPOLATIONS)}"
            )


def image_files(folder: Path) -> list[Path]:
    """The image files under folder (any depth), sorted; other and hidden files are ignored."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _eight_bit(image):
    """A Pillow image as 8-bit L / RGB: 16-bit and 32-bit gray scaled to 0-255, alpha dropped,
    palettes expanded; gray palettes stay gray."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        # 16-bit files hold 0..65535 (I;16, or I for 16-bit PNG); 8-bit data read as I stays
        scale = 257.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0  # float TIFFs in 0-1 or 0-255
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if mode in _GRAY_MODES:
        return image.convert("L")
    rgb = image.convert("RGB")
    if mode in ("P", "PA"):
        pixels = np.asarray(rgb)
        if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            return rgb.convert("L")
    return rgb


def decode(path: Path, conform: Conform) -> np.ndarray:
    """One image file as uint8 H×W×C (C = conform.channels, or 1 / 3 as the file is)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = _eight_bit(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode this image ({exc})") from None
    if conform.channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif conform.channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    if conform.size is not None and image.size != (conform.size[1], conform.size[0]):
        resample = getattr(Image.Resampling, conform.interpolation.upper())
        image = image.resize((conform.size[1], conform.size[0]), resample)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


@dataclass
class Decoded:
    """A decoded list of files: images uint8 N×H×W×C in file order (skipped files left out)."""

    images: np.ndarray
    files: list[Path]  # the files decoded, one per image
    skipped: list[str]  # "path: reason" for each file left out (data.on_corrupt=skip)


def _stack(arrays: list[np.ndarray], files: list[Path], conform: Conform) -> np.ndarray:
    height, width = arrays[0].shape[:2]
    for path, array in zip(files, arrays, strict=True):
        if array.shape[:2] != (height, width):
            raise DataError(
                f"images differ in size ({files[0]}: {width}×{height}, {path}: "
                f"{array.shape[1]}×{array.shape[0]}); set data.image_size=[height,width] to "
                "resize them all"
            )
    if conform.channels is None and len({a.shape[2] for a in arrays}) > 1:
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    return np.stack(arrays)


def decode_files(
    files: Sequence[Path], conform: Conform, on_corrupt: str = "fail", threads: int | None = None
) -> Decoded:
    """Decode files in parallel (Pillow releases the GIL while decoding)."""
    if on_corrupt not in ("fail", "skip"):
        raise DataError(f"data.on_corrupt={on_corrupt}: not accepted; choose fail or skip")

    def one(path: Path):
        try:
            return decode(path, conform), None
        except DataError as exc:
            if on_corrupt == "fail":
                raise DataError(
                    f"{exc}; set data.on_corrupt=skip to leave such files out (they are "
                    "counted and listed in the run)"
                ) from None
            return None, str(exc)

    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, files, chunksize=256))
    kept = [(f, a) for f, (a, _) in zip(files, results, strict=True) if a is not None]
    skipped = [why for _, why in results if why is not None]
    if not kept:
        return Decoded(np.zeros((0, 0, 0, 0), np.uint8), [], skipped)
    arrays = [a for _, a in kept]
    kept_files = [f for f, _ in kept]
    return Decoded(_stack(arrays, kept_files, conform), kept_files, skipped)


def estimate_bytes(files: Sequence[Path], conform: Conform) -> int:
    """Memory the decoded images need as uint8 plus float32 results of their size (an
    autoencoder's reconstructions of test images), from the first file's header when the size
    or channels are the files' own."""
    from PIL import Image

    if not files:
        return 0
    height, width = conform.size or (0, 0)
    channels = conform.channels or 0
    if not (height and channels):
        try:
            with Image.open(files[0]) as first:
                width, height = (width, height) if height else first.size
                gray = first.mode in _GRAY_MODES or first.mode.startswith("I;16")
                channels = channels or (1 if gray else 3)
        except Exception:  # noqa: BLE001 - a bad first file is reported when it is decoded
            return 0
    return len(files) * height * width * channels * (1 + 4)


class FolderCache:
    """Decoded folders on disk: one .npz per (files, sizes, mtimes, settings)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(root: Path, files: Sequence[Path], conform: Conform, on_corrupt: str) -> str:
        digest = hashlib.sha256()
        settings = {"format": CACHE_FORMAT, "conform": conform.__dict__, "on_corrupt": on_corrupt}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for path in files:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
        return digest.hexdigest()

    def load(self, key: str, files: Sequence[Path]) -> Decoded | None:
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                images = stored["images"]
                kept = set(stored["kept"].tolist())
                skipped = stored["skipped"].tolist()
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry: decode again
        order = [f for i, f in enumerate(files) if i in kept]
        return Decoded(images, order, skipped)

    def store(self, key: str, files: Sequence[Path], decoded: Decoded) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        position = {f: i for i, f in enumerate(files)}
        kept = np.array([position[f] for f in decoded.files], np.int64)
        partial = self.folder / f".{key}.{os.getpid()}.npz"
        np.savez(partial, images=decoded.images, kept=kept, skipped=np.array(decoded.skipped, str))
        os.replace(partial, self.folder / f"{key}.npz")  # readers never see a half-written file
