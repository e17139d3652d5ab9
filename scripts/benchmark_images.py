"""Image folders, measured: decode + resize throughput of the folder source on the CIFAR-10
JPEG folders (first run and cached run), training throughput of the conv AE on 32×32×3 and
128×128×3 images (aead's training against a plain Keras fit of the same model on the same
arrays, in the same process), and the peak memory of a whole CIFAR-10 one-class run.

    AEAD_DATA_DIR=../shared/datasets python scripts/benchmark_images.py
    python scripts/benchmark_images.py --skip-run      (no whole run: decode and training only)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aead.data import DataSettings, candidate_roots, image_files
from aead.data.images import Conform, decode_files
from aead.data.sources import ClassFolders

EPOCHS = 3
BATCH = 64


def _cifar_root() -> Path:
    for _, root in candidate_roots(None):
        if (root / "cifar10" / "train").is_dir():
            return root / "cifar10"
    sys.exit("no cifar10/ folder: set AEAD_DATA_DIR to the folder holding it")


def decode_throughput(root: Path) -> None:
    print("decode (Pillow, all cores):")
    with tempfile.TemporaryDirectory() as cache:
        settings = DataSettings(cache_dir=cache)
        for attempt in ("first run", "cached run"):
            started = time.perf_counter()
            n = sum(len(ClassFolders(root).read(s, settings).images) for s in ("train", "test"))
            seconds = time.perf_counter() - started
            print(f"  {attempt:<28} {n:>6} images {seconds:7.1f} s  {n / seconds:9.0f} images/s")
    files = image_files(root / "train")[:5000]
    started = time.perf_counter()
    decoded = decode_files(files, Conform(channels=3, size=(128, 128)))
    seconds = time.perf_counter() - started
    print(
        f"  {'resized to 128×128 (bilinear)':<28} {len(decoded.files):>6} images "
        f"{seconds:7.1f} s  {len(decoded.files) / seconds:9.0f} images/s"
    )


def _plain_seconds(model_cfg: dict, x: np.ndarray, x_val: np.ndarray) -> float:
    """A plain Keras fit of the same model: one warm-up epoch, then EPOCHS timed."""
    import keras

    from aead.detectors.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(model_cfg, x.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    fit = {"validation_data": (x_val, x_val), "batch_size": BATCH, "verbose": 0}
    model.fit(x, x, epochs=1, **fit)
    started = time.perf_counter()
    model.fit(x, x, epochs=EPOCHS, **fit)
    return time.perf_counter() - started


def _aead_seconds(model_cfg: dict, x: np.ndarray, x_val: np.ndarray) -> float:
    """aead's training (seeding, callbacks, progress lines), warmed up the same way."""
    from aead.detectors.training import train_autoencoder

    trainer = {"epochs": 1, "batch_size": BATCH, "learning_rate": 1e-3, "patience": 0,
               "verbose": 0}  # fmt: skip
    train_autoencoder(model_cfg, "mse", trainer, x, x_val, seed=0)
    started = time.perf_counter()
    train_autoencoder(model_cfg, "mse", {**trainer, "epochs": EPOCHS}, x, x_val, seed=0)
    return time.perf_counter() - started


def training_throughput() -> None:
    from aead.detectors.models import model_settings

    print(f"conv AE training, {EPOCHS} epochs, batch {BATCH} (images/s, after a warm-up epoch):")
    for side, n in ((32, 4500), (128, 1000)):
        x = np.random.default_rng(0).random((n, side, side, 3), dtype=np.float32)
        x_val = x[: n // 10]
        plain_s = _plain_seconds(model_settings("conv"), x, x_val)
        aead_s = _aead_seconds(model_settings("conv"), x, x_val)
        rate_plain, rate_aead = EPOCHS * n / plain_s, EPOCHS * n / aead_s
        print(
            f"  {side}×{side}×3, {n} images: plain Keras {rate_plain:7.0f}/s, aead "
            f"{rate_aead:7.0f}/s, ratio {rate_aead / rate_plain:.2f} (goal ≥ 0.95)"
        )


def whole_run_memory() -> None:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, "-m", "aead.run", "experiment=one_class_cifar10",
            "+detector=conv_mse_raw", "scenario.dataset=cifar10", "scenario.normal_class=0",
            "trainer.epochs=1", f"tracking.uri=sqlite:///{folder}/m.db",
            f"cache.dir={folder}/cache", f"hydra.run.dir={folder}/out",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"the run failed:\n{done.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
        print(
            f"whole CIFAR-10 one-class run (conv AE, 1 epoch, 4,500 + 500 training, 10,000 "
            f"test images, decoding included): {seconds:.0f} s, peak memory {peak:.2f} GB "
            "(goal < 2 GB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-run", action="store_true", help="no whole run (memory)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    decode_throughput(_cifar_root())
    training_throughput()
    if not args.skip_run:
        whole_run_memory()


if __name__ == "__main__":
    main()
