"""Pixel-level evaluation, measured: pixel ROC-AUC, AUPRO, best F1 and IoU / Dice at a
threshold for N anomaly maps of S×S pixels (random maps, a random rectangular defect in half
of the images), with the time it takes and the peak memory it allocates beyond the maps and
masks themselves (tracemalloc: NumPy's allocations are traced).

    python scripts/benchmark_pixel_metrics.py               (1,000 maps of 256×256)
    python scripts/benchmark_pixel_metrics.py --n 200 --size 128
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from aead.scoring.pixel_metrics import pixel_metrics
from aead.scoring.thresholds import fit_zscore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    maps = rng.random((args.n, args.size, args.size), dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    for i in range(0, args.n, 2):
        top, left = rng.integers(0, args.size // 2, 2)
        height, width = rng.integers(4, args.size // 4, 2)
        masks[i, top : top + height, left : left + width] = True
        maps[i, top : top + height, left : left + width] += 0.5
    threshold = fit_zscore(maps[1::2][:50].ravel())  # "normal" images' pixels
    inputs = (maps.nbytes + masks.nbytes) / 2**30
    tracemalloc.start()
    started = time.perf_counter()
    figures = pixel_metrics(masks, maps, threshold)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.n} maps of {args.size}×{args.size} ({inputs:.2f} GB of maps and masks)")
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))
    print(f"  time {seconds:.1f} s, peak allocated beyond the inputs {peak / 2**30:.2f} GB, "
          f"process peak {rss:.2f} GB (goals: under 30 s and under 1 GB)")  # fmt: skip


if __name__ == "__main__":
    main()
