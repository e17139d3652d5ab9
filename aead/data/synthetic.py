"""A synthetic defect data set in the MVTec AD / anomalib folder layout, made here from a seed:
procedural textures with natural variation and drawn-in defects with their masks. It is not
MVTec AD (no real products or photographs); it exists because no public defect data set can
be fetched on machines without internet, and it measures anomaly maps and pixel metrics.

    python -m aead.data.synthetic defects --seed 0            (writes defects/<category>/...)

Layout, per category: train/good/NNN.png; test/good/NNN.png; test/<defect>/NNN.png;
ground_truth/<defect>/NNN_mask.png (0 = normal, 255 = defect).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from aead.data.sources import to_uint8

Texture = Callable[[np.random.Generator, int], np.ndarray]  # -> float H×W×C in [0, 1]


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-9)


def woven(rng: np.random.Generator, size: int) -> np.ndarray:
    """Crossed threads (RGB): two sine weaves with jittered phase and a random tint."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(7, 9)
    warp = _noise(rng, size, 6) * 0.6
    threads = np.sin(2 * np.pi * (x + warp) / period) * np.sin(2 * np.pi * (y - warp) / period)
    value = 0.5 + 0.3 * threads + 0.05 * _noise(rng, size, 1)
    tint = np.array([0.55, 0.45, 0.35]) + rng.uniform(-0.05, 0.05, 3)
    return np.clip(value[..., None] * tint * 1.6, 0, 1)


def grain(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood-like grain (RGB): distorted growth rings, brown."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = rng.uniform(-size, 2 * size), rng.uniform(-3 * size, -size)
    radius = np.hypot(x - cx, (y - cy) * 0.3) + 4 * _noise(rng, size, 10)
    rings = 0.5 + 0.5 * np.sin(radius / rng.uniform(2.5, 3.5))
    value = 0.35 + 0.35 * rings + 0.04 * _noise(rng, size, 1)
    return np.clip(value[..., None] * np.array([1.0, 0.7, 0.45]), 0, 1)


def carpet(rng: np.random.Generator, size: int) -> np.ndarray:
    """Carpet-like noise (grayscale): fine fibres over a slow shade."""
    value = 0.5 + 0.12 * _noise(rng, size, 1.2) + 0.06 * _noise(rng, size, 12)
    return np.clip(value, 0, 1)[..., None]


def grid(rng: np.random.Generator, size: int) -> np.ndarray:
    """A regular grid (grayscale): dark lines on a light ground, slightly jittered."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(11, 13)
    ox, oy = rng.uniform(0, period, 2)
    lines = np.maximum(
        np.abs(((x + ox) % period) - period / 2), np.abs(((y + oy) % period) - period / 2)
    )
    value = 0.8 - 0.5 * (lines > period / 2 - 1.5) + 0.03 * _noise(rng, size, 1)
    return np.clip(value, 0, 1)[..., None]


TEXTURES: dict[str, Texture] = {"woven": woven, "grain": grain, "carpet": carpet, "grid": grid}


def _scratch(rng, image, mask):
    size = image.shape[0]
    canvas = Image.new("L", (size, size))
    start = rng.uniform(0.15, 0.85, 2) * size
    angle, length = rng.uniform(0, np.pi), rng.uniform(0.25, 0.5) * size
    end = start + length * np.array([np.cos(angle), np.sin(angle)])
    ImageDraw.Draw(canvas).line([tuple(start), tuple(end)], fill=255, width=int(rng.integers(2, 4)))
    drawn = np.asarray(canvas) > 0
    shade = rng.choice([0.05, 0.95])
    image[drawn] = shade
    mask |= drawn


def _disc(rng, size, low, high):
    y, x = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    radius = rng.uniform(low, high) * size
    return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


def _hole(rng, image, mask):
    hole = _disc(rng, image.shape[0], 0.04, 0.08)
    image[hole] = 0.02
    mask |= hole


def _stain(rng, image, mask):
    size = image.shape[0]
    blob = ndimage.gaussian_filter(_disc(rng, size, 0.07, 0.12).astype(float), 3)
    shift = rng.uniform(0.25, 0.4) * rng.choice([-1, 1])
    tint = np.ones(image.shape[-1]) if image.shape[-1] == 1 else rng.uniform(0.3, 1.0, 3)
    image[:] = np.clip(image + shift * blob[..., None] * tint, 0, 1)
    mask |= blob > 0.25


def _colour_spot(rng, image, mask):
    spot = _disc(rng, image.shape[0], 0.03, 0.05)
    colour = rng.uniform(0, 1, image.shape[-1])
    colour[rng.integers(image.shape[-1])] = 1.0 if image.shape[-1] == 3 else colour[0]
    if image.shape[-1] == 1:
        colour = np.array([0.0 if image[spot].mean() > 0.5 else 1.0])
    image[spot] = colour
    mask |= spot


def _missing_piece(rng, image, mask):
    size = image.shape[0]
    h, w = (rng.uniform(0.08, 0.16, 2) * size).astype(int)
    top, left = rng.integers(int(0.1 * size), int(0.9 * size) - max(h, w), 2)
    piece = np.zeros((size, size), bool)
    piece[top : top + h, left : left + w] = True
    image[piece] = image.mean(axis=(0, 1))  # flat: the texture is gone there
    mask |= piece


DEFECTS = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "colour_spot": _colour_spot,
    "missing_piece": _missing_piece,
}


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(array)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def generate(
    root: str | Path, seed: int = 0, size: int = 128, n_train: int = 200, n_test_good: int = 40,
    n_per_defect: int = 12, categories=tuple(TEXTURES),
) -> dict:  # fmt: skip
    """Writes the data set under root; returns what it wrote (also in root/README.json)."""
    root = Path(root)
    written = {}
    for c, category in enumerate(categories):
        rng = np.random.default_rng([seed, c])
        texture, folder = TEXTURES[category], root / category
        for i in range(n_train):
            _save(texture(rng, size), folder / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(texture(rng, size), folder / "test" / "good" / f"{i:03d}.png")
        for defect, draw in DEFECTS.items():
            for i in range(n_per_defect):
                image, mask = texture(rng, size).copy(), np.zeros((size, size), bool)
                draw(rng, image, mask)
                _save(image, folder / "test" / defect / f"{i:03d}.png")
                _save(
                    mask[..., None].astype(float),
                    folder / "ground_truth" / defect / f"{i:03d}_mask.png",
                )
        written[category] = {
            "channels": int(texture(np.random.default_rng(0), 8).shape[-1]),
            "train": n_train,
            "test_good": n_test_good,
            "defects": dict.fromkeys(DEFECTS, n_per_defect),
        }
    info = {"seed": seed, "size": size, "categories": written, "what": __doc__.split("\n\n")[0]}
    (root / "README.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test-good", type=int, default=40)
    parser.add_argument("--n-per-defect", type=int, default=12)
    parser.add_argument("--categories", nargs="+", default=list(TEXTURES), choices=list(TEXTURES))
    args = parser.parse_args(argv)
    info = generate(
        args.root, args.seed, args.size, args.n_train, args.n_test_good, args.n_per_defect,
        tuple(args.categories),
    )  # fmt: skip
    for category, what in info["categories"].items():
        defective = sum(what["defects"].values())
        print(
            f"{args.root}/{category}: {what['train']} training, {what['test_good']} good and "
            f"{defective} defective test images, {what['channels']} channel(s)"
        )


if __name__ == "__main__":
    main()
