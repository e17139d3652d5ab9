"""Which autoencoder score works on the one-class benchmark: trains one autoencoder per class
(normal = that class of the full training split) and prints, per class, the ROC-AUC on the
full test split of several scores of the same model, then their means over the classes.

    python scripts/one_class_study.py [--dataset mnist|fashion_mnist] [--model dense|conv|deep_conv]
        [--loss mse] [--epochs 10] [--batch-size 64] [--classes 0 1 ...] [--seed 0]
        [--units ...] [--filters ...]

Columns: the raw errors `mse` and `ssim` (1 - SSIM) of the trained model; `complexity`: the
training loss's error corrected by the image's complexity (score=complexity: zlib, max_z);
`cx_ssim`: the same on the 1 - SSIM error; `knn5`: the mean distance of the image's code (the
bottleneck) to its 5 nearest normal training codes (score=latent_knn normalize=none);
`knn5_l2`: the same with unit-length codes (score=latent_knn); `knn_cx`, `knn_cx_ssim`: the
validation-standardized mean of knn5_l2 and complexity / cx_ssim (score=ensemble). One seed;
the full training split of the class (10% held out for validation), the full test split.
A study, not a test: it prints figures for choosing the benchmark's detectors.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from aead.data import build_splits
from aead.detectors.losses import score_images
from aead.detectors.models import encoder_of, model_settings
from aead.detectors.training import train_autoencoder
from aead.scoring.scores import ComplexityScore, FitContext, Scored, build_score

MODELS = ("dense", "conv", "deep_conv")  # their settings: conf/model/<name>.yaml
SCORES = ("mse", "ssim", "complexity", "cx_ssim", "knn5", "knn5_l2", "knn_cx", "knn_cx_ssim")


def study_class(args, normal_class: int) -> dict[str, float]:
    scenario = {"name": "one_class", "dataset": args.dataset, "normal_class": normal_class}
    splits = build_splits(scenario, {"download": False}, seed=args.seed)
    trainer = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
               "patience": 3, "verbose": 0}  # fmt: skip
    model, _ = train_autoencoder(
        args.model_settings, args.loss, trainer, splits.x_train, splits.x_val, seed=args.seed
    )

    def scored(images):
        reconstructions = model.predict(images, batch_size=512, verbose=0)
        return Scored(images, score_images(images, reconstructions, args.loss))

    test, val = scored(splits.x_test), scored(splits.x_val)
    aucs = {}
    recon = model.predict(splits.x_test, batch_size=512, verbose=0)
    val_recon = model.predict(splits.x_val, batch_size=512, verbose=0)
    for error in ("mse", "ssim"):
        aucs[error] = roc_auc_score(splits.y_test, score_images(splits.x_test, recon, error))
    complexity = ComplexityScore({"compressor": "zlib", "combine": "max_z"})
    complexity.fit(val)
    aucs["complexity"] = roc_auc_score(splits.y_test, complexity(test))
    on_ssim = ComplexityScore({"compressor": "zlib", "combine": "max_z"})
    on_ssim.fit(Scored(splits.x_val, score_images(splits.x_val, val_recon, "ssim")))
    ssim_test = Scored(splits.x_test, score_images(splits.x_test, recon, "ssim"))
    aucs["cx_ssim"] = roc_auc_score(splits.y_test, on_ssim(ssim_test))
    encoder = encoder_of(model)
    codes = {}

    def encode(images):  # the training and test codes are computed once for all variants
        key = id(images)
        if key not in codes:
            codes[key] = encoder.predict(images, 512, verbose=0)
        return codes[key]

    knn = {"name": "latent_knn", "k": 5, "normalize": "l2"}
    complexity = {"name": "complexity", "compressor": "zlib", "combine": "max_z"}
    context = FitContext(splits.x_train, encode)
    errors = {e: (score_images(splits.x_val, val_recon, e), score_images(splits.x_test, recon, e))
              for e in (args.loss, "ssim")}  # fmt: skip
    for name, settings, error in (
        ("knn5", {**knn, "normalize": "none"}, args.loss),
        ("knn5_l2", knn, args.loss),
        ("knn_cx", {"name": "ensemble", "members": [knn, complexity]}, args.loss),
        ("knn_cx_ssim", {"name": "ensemble", "members": [knn, complexity]}, "ssim"),
    ):
        score = build_score(settings)
        score.fit(Scored(splits.x_val, errors[error][0]), context)
        aucs[name] = roc_auc_score(splits.y_test, score(Scored(splits.x_test, errors[error][1])))
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--model", choices=sorted(MODELS), default="dense")
    parser.add_argument("--loss", default="mse")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--units", type=int, nargs="*", help="dense model: layer sizes")
    parser.add_argument("--filters", type=int, nargs="*", help="conv models: filters per stage")
    parser.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.model_settings = model_settings(args.model)
    if args.units:
        args.model_settings["units"] = args.units
    if args.filters:
        args.model_settings["filters"] = args.filters
    print(f"{vars(args)}", flush=True)
    print("class  " + "  ".join(f"{s:>10}" for s in SCORES) + "   seconds", flush=True)
    rows = []
    for c in args.classes:
        start = time.time()
        aucs = study_class(args, c)
        rows.append([aucs[s] for s in SCORES])
        print(f"{c:>5}  " + "  ".join(f"{100 * aucs[s]:>10.2f}" for s in SCORES)
              + f"   {time.time() - start:7.0f}", flush=True)  # fmt: skip
    means = 100 * np.mean(rows, axis=0)
    print(" mean  " + "  ".join(f"{m:>10.2f}" for m in means), flush=True)


if __name__ == "__main__":
    main()
