"""The supervised baseline (conf/model/cnn): a CNN learns P(anomaly) from labeled training
images with class weights w_c = N / (2 · N_c), early stopping on a stratified validation
split, and optionally K-fold cross-validation (trainer.kfold). Its error is that probability;
its threshold is fitted on the normal images of its validation split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aead.detectors.base import (
    Evaluated,
    FitReport,
    KerasDetector,
    Training,
    TrainingData,
    register,
)
from aead.detectors.training import (
    classifier_split,
    cross_validate_classifier,
    predict_probability,
    require_labels,
    train_classifier,
)
from aead.store.cache import training_key
from aead.tracking import lifecycle

TRAINING_LOSS = "binary_crossentropy"  # it learns labels; the `loss` group does not apply


@register
class ClassifierDetector(KerasDetector):
    kind = "classifier"
    supports_kfold = True

    @property
    def error_name(self) -> str:
        return "probability"

    @property
    def training_loss(self) -> str:
        return TRAINING_LOSS

    def fit(self, data: TrainingData, training: Training) -> None:
        labeled = require_labels(data.labeled, data.scenario)
        k = int(training.trainer.get("kfold") or 0)
        if k:
            lifecycle.set_stage("k-fold training")
            self.report_ = _kfold_report(
                cross_validate_classifier(
                    self.model_cfg,
                    training.trainer,
                    labeled,
                    k,
                    training.val_fraction,
                    training.seed,
                )  # fmt: skip
            )
            lifecycle.set_stage("training")
        split = classifier_split(labeled, training.val_fraction, training.seed)
        key, fields = training_key(
            self.model_cfg, TRAINING_LOSS, training.trainer, training.seed, split
        )

        def train():
            return train_classifier(
                self.model_cfg, training.trainer, *split, seed=training.seed,
                callbacks=training.callbacks,
            )  # fmt: skip

        x_val, y_val = split[2], split[3]
        # it learned labels, not normal images; its threshold: the normal validation images
        self._obtain(training, key, fields, train, None, x_val[y_val == 0])

    def errors(self, images: np.ndarray, train_index=None) -> Evaluated:
        return Evaluated(predict_probability(self.model_, images, self.batch_size_))


def _kfold_report(folds: list[dict]) -> FitReport:
    summary = {}
    for metric in ("roc_auc", "accuracy"):
        values = np.array([f[metric] for f in folds])
        summary[f"kfold_{metric}_mean"] = float(values.mean())
        summary[f"kfold_{metric}_std"] = float(values.std(ddof=1))
    summary["kfold_k"] = len(folds)
    steps = {
        "fold_roc_auc": [f["roc_auc"] for f in folds],
        "fold_accuracy": [f["accuracy"] for f in folds],
    }
    return FitReport(summary, steps, {"kfold.csv": pd.DataFrame(folds)})
