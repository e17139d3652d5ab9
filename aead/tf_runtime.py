"""TensorFlow without its start-up noise. Importing TensorFlow prints C++ log lines ("oneDNN
custom operations are on", "All log messages before absl::InitializeLog() ...") straight to
the process's stderr, before any Python setting can filter them, and they bury aead's own
lines. `import_quietly()` imports it with stderr (file descriptor 2) pointed at /dev/null.

Turn them back on with AEAD_TF_LOGS=1 (which also leaves TF_CPP_MIN_LOG_LEVEL alone, so TF's
later C++ warnings show again; aead/__init__.py sets it to 3 otherwise).

Also the runtime settings of a run: its thread pools, its seeds and where it computes.
"""

from __future__ import annotations

import os
import sys

from aead.errors import ConfigError

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


def tf_threads(setting, job_cores: int) -> int:
    """compute.threads: a number, or 'auto' = the cores this job may use (see aead.run)."""
    if setting in (None, "auto"):
        return max(1, int(job_cores))
    threads = int(setting)
    if threads < 1:
        raise ConfigError(f"compute.threads must be 'auto' or a positive number, got {setting}")
    return threads


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools, so that parallel jobs do not oversubscribe the cores.
    Only possible before TF's runtime starts; a process that runs a second job keeps them."""
    import tensorflow as tf

    for setter in (
        tf.config.threading.set_intra_op_parallelism_threads,
        tf.config.threading.set_inter_op_parallelism_threads,
    ):
        try:
            setter(threads)
        except RuntimeError:
            pass  # already initialized by an earlier job in this process


def device_tags() -> dict[str, str]:
    """Where this run computes: the GPU TensorFlow sees (else the CPU) and TensorFlow's build."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU ({details.get('device_name', gpus[0].name)})"
        device += f" + {len(gpus) - 1} more" if len(gpus) > 1 else ""
    else:
        device = f"CPU ({os.cpu_count()} cores)"
    build = tf.sysconfig.get_build_info()
    if build.get("is_cuda_build"):
        kind = f"CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')}"
    else:
        kind = "no CUDA"
    return {"aead.device": device, "aead.tensorflow": f"{tf.__version__} ({kind})"}


def seed_everything(seed: int) -> None:
    """Same config, same numbers: seeds Python, NumPy and TF, and makes TF ops deterministic.
    Each model is seeded again right before it is built (training.seeded_model)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
