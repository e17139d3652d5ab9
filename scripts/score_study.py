"""How much each complexity correction buys, in both directions, for one autoencoder: trains
it on MNIST (normal) and on Fashion-MNIST (normal), scores the full test sets and prints the
ROC-AUC of the raw error and of the corrected scores.

    python scripts/score_study.py [--model dense] [--loss mse] [--epochs 8] [--train-limit 5000]
                                  [--seed 0]

Corrections (complexity = compressed length in bits per pixel, zlib and PNG):
  error / complexity^w for w in 0 .. 1.5   (w = 0 is the raw error; score=complexity, ratio)
  max(z(log error), z(log error - log complexity))   (z fitted on normal validation images)
A study, not a test: it prints figures for the README and for choosing `score` settings.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from aead.data import build_splits
from aead.detectors.losses import score_images
from aead.detectors.models import model_settings
from aead.detectors.training import train_autoencoder
from aead.scoring.scores import complexity_bits

MODELS = ("dense", "conv")  # their settings: conf/model/<name>.yaml
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="dense")
    parser.add_argument("--loss", default="mse", help="training loss (bce, mse, mae, ssim)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trainer = {"epochs": args.epochs, "batch_size": 128, "learning_rate": 0.001, "patience": 2,
               "verbose": 0}  # fmt: skip
    print(f"model={args.model} loss={args.loss} epochs={args.epochs} "
          f"train_limit={args.train_limit} seed={args.seed}")  # fmt: skip
    print("scenario          compressor error  " + "  ".join(f"w={w:<4}" for w in WEIGHTS)
          + "  max(z raw, z ratio)")  # fmt: skip
    for scenario in ("fashion_vs_mnist", "mnist_vs_fashion"):
        data = {"download": False, "train_limit": args.train_limit}
        splits = build_splits({"name": scenario}, data, seed=args.seed)
        model, _ = train_autoencoder(
            model_settings(args.model),
            args.loss,
            trainer,
            splits.x_train,
            splits.x_val,
            seed=args.seed,
        )
        test = model.predict(splits.x_test, batch_size=512, verbose=0)
        val = model.predict(splits.x_val, batch_size=512, verbose=0)
        for compressor in ("zlib", "png"):
            bits = complexity_bits(splits.x_test, compressor)
            val_bits = complexity_bits(splits.x_val, compressor)
            for error in ("mse", "bce", "mae"):
                e = score_images(splits.x_test, test, error)
                e_val = score_images(splits.x_val, val, error)
                aucs = [roc_auc_score(splits.y_test, e / bits**w) for w in WEIGHTS]

                def z(values, reference):
                    return (values - reference.mean()) / reference.std()

                ratio, val_ratio = np.log(e / bits), np.log(e_val / val_bits)
                both = np.maximum(z(np.log(e), np.log(e_val)), z(ratio, val_ratio))
                print(
                    f"{scenario:<17} {compressor:<10} {error:<5}  "
                    + "  ".join(f"{a:.4f}" for a in aucs)
                    + f"  {roc_auc_score(splits.y_test, both):.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
