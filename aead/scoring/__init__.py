"""Scoring: what is made of a detector's errors (scores.py: the `score` group; maps.py:
per-pixel anomaly maps), the threshold fitted on normal validation scores (thresholds.py), and
the image- and pixel-level metrics (metrics.py, pixel_metrics.py)."""
