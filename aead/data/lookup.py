"""Where data is looked for (config, environment, Debian's datasets), and the error that says
where it looked."""

from __future__ import annotations

import os
from pathlib import Path

from aead.errors import ConfigError

DATA_ENV_VAR = "AEAD_DATA_DIR"
DEBIAN_DATASETS = Path("/usr/share/datasets")


class DataError(ConfigError):
    """Raised when data is missing or malformed; the message says where and why (and which
    setting points aead at other data)."""


def candidate_roots(root: str | None) -> list[tuple[str, Path]]:
    """Data roots in the order they are searched: config, environment, Debian's datasets."""
    roots = []
    if root:
        roots.append(("data.root", Path(root).expanduser()))
    if os.environ.get(DATA_ENV_VAR):
        roots.append((DATA_ENV_VAR, Path(os.environ[DATA_ENV_VAR]).expanduser()))
    roots.append(("Debian datasets", DEBIAN_DATASETS))
    return roots
