"""aead: experiment-tracked comparisons of image anomaly detectors."""

import os

# TensorFlow's C++ chatter (info lines, E-level "NodeDef mentions attribute ..." that are not
# errors of the run) hides aead's own lines. AEAD_TF_LOGS=1, or TF_CPP_MIN_LOG_LEVEL set by
# the user, keeps it (see aead/tf_runtime.py).
if os.environ.get("AEAD_TF_LOGS", "").strip().lower() not in ("1", "true", "yes", "on"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
