"""Image folders, measured: decode + resize throughput of the folder source on the CIFAR-10
JPEG folders (first run and cached run), training throughput of the conv AE on 32×32×3 and
128×128×3 images (aead's training on uint8 images, converted a batch at a time, against a
plain Keras fit of the same model on the same images as float, in the same process), and the
peak memory of a whole CIFAR-10 one-class run.

    AEAD_DATA_DIR=../shared/datasets python scripts/benchmark_images.py
    python scripts/benchmark_images.py --skip-run      (no whole run: decode and training only)
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from aead.data import DataSettings, candidate_roots, image_files
from aead.data.images import Conform, decode_files
from aead.data.sources import ClassFolders

EPOCHS = 3
BATCH = 64
ROUNDS = 4  # the machine is shared: run to run, one side varies by up to a third


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


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, so that both sides are timed the same way: the epochs after
    the first, which also traces and compiles the model's step."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def _plain_seconds(model_cfg: dict, x: np.ndarray, x_val: np.ndarray) -> list[float]:
    """A plain Keras fit of the same model: the seconds of each of epochs 2 to EPOCHS + 1."""
    from aead.detectors.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(model_cfg, x.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    timer = EpochTimer()
    model.fit(x, x, validation_data=(x_val, x_val), batch_size=BATCH, epochs=EPOCHS + 1,
              verbose=0, callbacks=[timer])  # fmt: skip
    return timer.seconds[1:]


def _aead_seconds(model_cfg: dict, x: np.ndarray, x_val: np.ndarray) -> list[float]:
    """aead's training (seeding, its callbacks, progress lines), timed the same way."""
    from aead.detectors.training import train_autoencoder

    trainer = {"epochs": EPOCHS + 1, "batch_size": BATCH, "learning_rate": 1e-3, "patience": 0,
               "verbose": 0}  # fmt: skip
    timer = EpochTimer()
    train_autoencoder(model_cfg, "mse", trainer, x, x_val, seed=0, callbacks=[timer])
    return timer.seconds[1:]


def training_throughput() -> None:
    from aead.data import to_unit
    from aead.detectors.models import model_settings

    print(
        f"conv AE training, batch {BATCH}: images/s of the fastest of epochs 2-{EPOCHS + 1} "
        f"(the first traces the step) over {ROUNDS} fits of each side, alternating:"
    )
    for side, n in ((32, 4500), (128, 1000)):
        # aead keeps images as uint8 and converts each batch; the plain loop gets the same
        # images divided by 255 up front, as a plain Keras script would
        images = np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        x, x_val = images, images[: n // 10]
        x_float, x_val_float = to_unit(x), to_unit(x_val)
        plain_s, aead_s = math.inf, math.inf
        # alternating, as a process slows down as it goes on; the fastest epoch of each side,
        # as timeit takes the fastest repeat: the others were slowed by the rest of the machine
        for _ in range(ROUNDS):
            plain_s = min(plain_s, *_plain_seconds(model_settings("conv"), x_float, x_val_float))
            aead_s = min(aead_s, *_aead_seconds(model_settings("conv"), x, x_val))
        rate_plain, rate_aead = n / plain_s, n / aead_s
        print(
            f"  {side}×{side}×3, {n} images: plain Keras {rate_plain:7.0f}/s, aead "
            f"{rate_aead:7.0f}/s, ratio {rate_aead / rate_plain:.2f} (goal ≥ 0.95)"
        )


# The run's own peak: started from a small Python parent, as the RSS a child has when it is
# forked from this process (TensorFlow and the arrays above loaded) would count otherwise.
PEAK_OF = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def whole_run_memory() -> None:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, "-c", PEAK_OF,
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
        peak = int(done.stderr.strip().splitlines()[-1]) / 2**20  # KiB -> GiB
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
