"""TensorFlow without its start-up noise. Importing TensorFlow prints C++ log lines ("oneDNN
custom operations are on", "All log messages before absl::InitializeLog() ...") straight to
the process's stderr, before any Python setting can filter them, and they bury aead's own
lines. `import_quietly()` imports it with stderr (file descriptor 2) pointed at /dev/null.

Turn them back on with AEAD_TF_LOGS=1 (which also leaves TF_CPP_MIN_LOG_LEVEL alone, so TF's
later C++ warnings show again; aead/__init__.py sets it to 3 otherwise).
"""

from __future__ import annotations

import os
import sys

SHOW_LOGS = "AEAD_TF_LOGS"


def _wanted() -> bool:
    return os.environ.get(SHOW_LOGS, "").strip().lower() in ("1", "true", "yes", "on")


def import_quietly() -> None:
    """Import TensorFlow (and Keras) once, silently unless AEAD_TF_LOGS=1."""
    if "tensorflow" in sys.modules or _wanted():
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401  (imports TensorFlow)
        import tensorflow  # noqa: F401
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
