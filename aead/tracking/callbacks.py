"""Keras callbacks that record to the run (the tracking side of training)."""

from __future__ import annotations

from collections.abc import Callable

import keras


class EpochLogger(keras.callbacks.Callback):
    """Logs train_loss / val_loss (and other Keras logs) each epoch through
    `log(metrics, step)`, step = epoch (1-based)."""

    RENAME = {"loss": "train_loss"}

    def __init__(self, log: Callable[[dict, int], None]):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log({self.RENAME.get(k, k): float(v) for k, v in (logs or {}).items()}, epoch + 1)
