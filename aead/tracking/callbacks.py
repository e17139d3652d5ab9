"""Keras callbacks that record to the active MLflow run (the tracking side of training)."""

from __future__ import annotations

import keras
import mlflow

from aead.tracking.retry import retrying


class EpochLogger(keras.callbacks.Callback):
    """Logs train_loss / val_loss (and other Keras logs) to the active MLflow run each epoch,
    step = epoch (1-based)."""

    RENAME = {"loss": "train_loss"}

    def on_epoch_end(self, epoch, logs=None):
        logs = {self.RENAME.get(k, k): float(v) for k, v in (logs or {}).items()}
        retrying(mlflow.log_metrics, logs, step=epoch + 1)
