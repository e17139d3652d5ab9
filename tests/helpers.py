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

# The configs as the package ships them (conf/ is the package aead.conf).
CONF = REPO / "conf"


def hydra_config():
    """Hydra's compose API on aead's own configs: `with hydra_config(): compose(...)`."""
    from hydra import initialize_config_module

    return initialize_config_module(config_module="aead.conf", version_base="1.3")
