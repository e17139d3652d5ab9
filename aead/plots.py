"""Pure figure functions: arrays in, a matplotlib Figure out. Nothing here logs or saves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve as _roc_points  # noqa: E402

from aead.data.sources import to_unit  # noqa: E402
from aead.scoring.thresholds import Threshold  # noqa: E402


def error_histogram(
    normal_scores: np.ndarray,
    anomaly_scores: np.ndarray,
    threshold: Threshold | None,
    score_name: str,
    title: str = "",
) -> plt.Figure:
    """Normal vs anomalous score histograms with the threshold lines and, for a Z-score
    threshold, the fitted normal curve of the validation scores."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    all_scores = np.concatenate([normal_scores, anomaly_scores])
    bins = np.linspace(all_scores.min(), all_scores.max(), 60) if all_scores.size else 10
    ax.hist(
        normal_scores, bins=bins, alpha=0.6, density=True, label=f"normal (n={len(normal_scores)})"
    )
    ax.hist(
        anomaly_scores,
        bins=bins,
        alpha=0.6,
        density=True,
        label=f"anomaly (n={len(anomaly_scores)})",
    )
    if threshold is not None:
        if threshold.mean is not None and threshold.std:
            grid = np.linspace(all_scores.min(), all_scores.max(), 400)
            pdf = np.exp(-0.5 * ((grid - threshold.mean) / threshold.std) ** 2) / (
                threshold.std * np.sqrt(2 * np.pi)
            )
            ax.plot(grid, pdf, color="black", lw=1.2, label="fitted normal (validation)")
        for side, value in (("lower", threshold.lower), ("upper", threshold.upper)):
            if value is not None:
                ax.axvline(
                    value,
                    color="red",
                    ls="--",
                    lw=1.2,
                    label=f"{threshold.name} {side} = {value:.4g}",
                )
    ax.set_xlabel(f"anomaly score ({score_name})")
    ax.set_ylabel("density")
    ax.set_title(title or "Anomaly scores on the evaluation set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, roc_auc: float | None, title: str = ""
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = _roc_points(labels, scores)
        ax.plot(fpr, tpr, lw=1.6, label=f"ROC-AUC = {roc_auc:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def roc_overlay(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> plt.Figure:
    """Several ROC curves on one axis: {label: (fpr, tpr)}."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for label, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, lw=1.3, label=label)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _montage(images: list[np.ndarray], columns: int, gap: int, caption_space: int = 0):
    """Images of one shape tiled row by row on one white RGB canvas, each cell with
    `caption_space` pixels above its image and `gap` pixels between cells: one imshow for a
    whole grid (a figure of 32 axes took about a second to build). Returns the canvas and
    the cell's height and width in pixels; image k sits in cell (k // columns, k % columns)."""
    pictures = [np.clip(to_unit(image), 0.0, 1.0) for image in images]
    height, width = pictures[0].shape[:2]
    cell_h, cell_w = caption_space + height + gap, width + gap
    rows = int(np.ceil(len(pictures) / columns))
    canvas = np.ones((rows * cell_h, columns * cell_w, 3), dtype=np.float32)
    for k, picture in enumerate(pictures):
        if picture.ndim == 2:
            picture = picture[..., None]
        top = (k // columns) * cell_h + caption_space
        left = (k % columns) * cell_w + gap // 2
        canvas[top : top + height, left : left + width] = picture[..., :3]  # gray: broadcast
    return canvas, cell_h, cell_w


def _canvas_axes(fig: plt.Figure, canvas: np.ndarray, rect: tuple) -> plt.Axes:
    ax = fig.add_axes(rect)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    return ax


def reconstructions(rows: dict[str, tuple[np.ndarray, np.ndarray]], n: int = 8) -> plt.Figure:
    """For each row label (e.g. normal / anomaly): originals above their reconstructions."""
    n = max(1, min(n, *(len(orig) for orig, _ in rows.values()))) if rows else 1
    fig = plt.figure(figsize=(1.2 * n + 0.9, 1.35 * 2 * max(1, len(rows))))
    fig.suptitle("Originals (top) and reconstructions (bottom)", fontsize=9)
    if not rows:
        fig.text(0.5, 0.5, "none", ha="center", va="center")
        return fig
    tiles, labels = [], []
    for label, (originals, recon) in rows.items():
        for images, kind in ((originals, "original"), (recon, "reconstruction")):
            tiles += list(images[:n])
            labels.append(f"{label}\n{kind}")
    canvas, cell_h, _ = _montage(tiles, n, gap=max(2, tiles[0].shape[1] // 10))
    ax = _canvas_axes(
        fig, canvas, rect=(0.9 / fig.get_figwidth(), 0.0, 1.0 - 0.9 / fig.get_figwidth(), 0.9)
    )
    ax.set_yticks([cell_h * (r + 0.5) for r in range(len(labels))], labels, fontsize=7)
    ax.tick_params(left=False)
    return fig


def image_grid(images: np.ndarray, captions: list[str], title: str, columns: int = 8) -> plt.Figure:
    """A grid of images with a caption each (e.g. the flagged outliers and their scores)."""
    count = max(1, len(images))
    rows = int(np.ceil(count / columns))
    cols = min(columns, count)
    if not len(images):  # wide enough for the title
        fig = plt.figure(figsize=(6.5, 1.4))
        fig.suptitle(title, fontsize=9)
        fig.text(0.5, 0.4, "none", ha="center", va="center")
        return fig
    fig = plt.figure(figsize=(max(1.4 * cols, 4.5), 1.6 * rows + 0.4))
    fig.suptitle(title, fontsize=9)
    side = images.shape[1]
    space = max(4, side // 3)  # the caption's band above each image
    canvas, cell_h, cell_w = _montage(
        list(images), cols, gap=max(2, side // 8), caption_space=space
    )
    ax = _canvas_axes(fig, canvas, rect=(0.0, 0.0, 1.0, 1.0 - 0.45 / fig.get_figheight()))
    for k, caption in enumerate(captions[: len(images)]):
        x = (k % cols + 0.5) * cell_w
        y = (k // cols) * cell_h + space * 0.55
        ax.text(x, y, caption, ha="center", va="center", fontsize=7)
    return fig


def anomaly_maps(
    images: np.ndarray, maps: np.ndarray, captions: list[str], masks: np.ndarray | None = None
) -> plt.Figure:
    """Each image above its anomaly map overlaid on it (one colour scale for all), with the
    ground-truth mask's outline where masks exist; one tiled picture (_montage)."""
    fig = plt.figure(figsize=(1.5 * max(1, len(images)) + 1.2, 3.6))
    fig.suptitle("Anomaly maps (white: ground-truth mask)", fontsize=9)
    if not len(images):
        fig.text(0.5, 0.5, "none", ha="center", va="center")
        return fig
    top = float(np.max(maps)) or 1.0
    scale = matplotlib.colors.Normalize(vmin=0.0, vmax=top)
    colours = matplotlib.colormaps["jet"](scale(np.asarray(maps, dtype=np.float32)))[..., :3]
    pictures = [_rgb(image) for image in images]
    overlays = list(0.5 * np.stack(pictures) + 0.5 * colours)  # the map at alpha 0.5
    n = len(images)
    height, width = pictures[0].shape[:2]
    space = max(4, height // 4)  # the caption's band above each image
    gap = max(2, width // 10)
    canvas, cell_h, cell_w = _montage([*pictures, *overlays], n, gap, space)
    ax = _canvas_axes(fig, canvas, rect=(0.06, 0.0, 0.84, 0.9))
    ax.set_yticks([space + height / 2, cell_h + space + height / 2], ["image", "anomaly map"],
                  fontsize=7)  # fmt: skip
    ax.tick_params(left=False)
    for k, caption in enumerate(captions[:n]):
        ax.text((k + 0.5) * cell_w, space * 0.55, caption, ha="center", va="center", fontsize=7)
    rows, columns = np.arange(height), np.arange(width)
    for k in range(n if masks is not None else 0):
        if masks[k].any():
            left = k * cell_w + gap // 2  # where _montage put image k
            for row in range(2):
                ax.contour(columns + left, rows + row * cell_h + space, masks[k], levels=[0.5],
                           colors="white", linewidths=0.8)  # fmt: skip
    bar = fig.add_axes((0.92, 0.05, 0.015, 0.38))
    fig.colorbar(matplotlib.cm.ScalarMappable(scale, "jet"), cax=bar)
    bar.tick_params(labelsize=6)
    return fig


def _rgb(image: np.ndarray) -> np.ndarray:
    """An image as H×W×3 floats in [0, 1] (gray repeated)."""
    picture = np.clip(to_unit(image), 0.0, 1.0).astype(np.float32)
    if picture.ndim == 2:
        picture = picture[..., None]
    return np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture[..., :3]


def maps_by_variant(
    images: np.ndarray, rows: dict[str, np.ndarray], masks: np.ndarray | None = None,
    captions: list[str] | None = None, title: str = "Anomaly maps per variant",
) -> plt.Figure:  # fmt: skip
    """The same test images (top row, the mask's outline where masks exist) and, below, each
    variant's map of them overlaid on the image, one colour scale per variant (its own
    maximum: variants' errors are not on one scale)."""
    n = max(1, len(images))
    fig, axes = plt.subplots(
        1 + len(rows), n, figsize=(1.4 * n + 2.2, 1.45 * (1 + len(rows)) + 0.5), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    pictures = [image.squeeze() for image in images]
    gray = {"cmap": "gray", "vmin": 0, "vmax": 255} if images.dtype == np.uint8 else {}
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (label, maps) in enumerate([("image", None), *rows.items()]):
        axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
        top = float(np.max(maps)) if maps is not None and maps.size else 1.0
        for c, picture in enumerate(pictures):
            axes[r, c].imshow(picture, **(gray if picture.ndim == 2 else {}))
            if maps is not None:
                axes[r, c].imshow(
                    maps[c].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=top or 1.0
                )
            if masks is not None and masks[c].any():
                axes[r, c].contour(masks[c], levels=[0.5], colors="white", linewidths=0.6)
            if r == 0 and captions:
                axes[r, c].set_title(captions[c], fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def training_curves(history: dict[str, list[float]]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def close(figure: plt.Figure) -> None:
    plt.close(figure)
