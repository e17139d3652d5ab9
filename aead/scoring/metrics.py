"""Detection metrics from labels (1 = anomaly), scores (higher = more anomalous) and the
thresholded predictions. Plain numpy in, plain floats out."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def detection_metrics(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict:
    labels = np.asarray(labels).astype(int)
    predicted = np.asarray(predicted).astype(int)
    both_classes = len(np.unique(labels)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    out = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "fpr": float(fp / (fp + tn)) if (fp + tn) else 0.0,
        "n_flagged": int(predicted.sum()),
        "n_anomalies": int(labels.sum()),
        "n_evaluated": int(len(labels)),
        "true_positives": int(tp),
    }
    if both_classes:  # ROC-AUC and AP are undefined with a single class
        out["roc_auc"] = float(skm.roc_auc_score(labels, scores))
        out["average_precision"] = float(skm.average_precision_score(labels, scores))
    return out
