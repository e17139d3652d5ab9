"""Constants the tests share (imported by the tests; conftest.py holds only fixtures)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Small and fast: one epoch on a slice of real images.
QUICK = [
    "trainer.epochs=1",
    "data.train_limit=600",
    "data.test_limit=200",
    "data.download=false",
    "trainer.verbose=0",
]
