"""aead: experiment-tracked comparisons of image anomaly detectors."""

import os

# TensorFlow's C++ start-up chatter hides the training progress; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
