"""Train once, score many: trained models cached under a key made of exactly what affects
training (model, training loss, trainer settings, seed, a digest of the code that builds and
trains models, and a fingerprint of the training and validation data: their shape, dtype and
bytes). Runs that differ only in threshold or score function reuse the model.

An entry holds a Keras model (`model.keras`) or, for detectors that are not Keras models (the
PyOD ones), their fitted state pickled (`model.pkl`).

Each entry is checked before use (key, file checksum, loadability); a stale or corrupt entry
is reported and retrained, never used silently.

Parallel jobs (a joblib sweep) share the cache: `training_lock(key)` lets one job train a
configuration while the others wait and then reuse it, and entries are published with an atomic
rename, so that two writers of one key never corrupt or fail each other.
"""

from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import aead

CACHE_FORMAT = 2
NOT_TRAINING = ("verbose", "kfold")  # trainer keys that do not change the trained weights
# The modules whose code shapes a trained model: the builders, the training loop and its
# callbacks, the losses. Their code is part of the key, so that an edit retrains.
TRAINING_CODE = ("aead.detectors.models", "aead.detectors.training", "aead.detectors.losses")


@functools.cache
def code_digest(modules: tuple[str, ...] = TRAINING_CODE) -> str:
    """SHA-256 of the modules' syntax trees: any change to what the code does changes it;
    comments and formatting do not (a re-format must not retrain every model)."""
    digest = hashlib.sha256()
    for name in modules:
        source = _source_of(name).read_text()
        digest.update(name.encode())
        digest.update(ast.dump(ast.parse(source)).encode())
    return digest.hexdigest()


def _source_of(module: str) -> Path:
    """The source file of an aead module, found without importing it (importing
    aead.detectors would import TensorFlow: seconds, for a digest of a few files)."""
    top, *parts = module.split(".")
    spec = importlib.util.find_spec(top)
    for folder in (spec and spec.submodule_search_locations) or ():
        base = Path(folder).joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise ImportError(f"cannot find the source of {module} for the cache key")


def _fingerprint(*arrays: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(f"{array.shape} {array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def training_key(
    model: Mapping,
    loss_name: str | None,
    trainer: Mapping,
    seed: int,
    data_arrays,
    code: tuple[str, ...] = TRAINING_CODE,
) -> tuple[str, dict]:
    """The cache key and the fields it is made of (stored with the entry, for humans).
    `code`: the modules whose code shapes this model (a detector adds its own)."""
    import keras  # TensorFlow: imported when a key is made, not by code_digest()
    import tensorflow as tf

    fields = {
        "format": CACHE_FORMAT,
        "aead": aead.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "code": code_digest(tuple(code)),
        "model": dict(model),
        "loss": loss_name,
        "trainer": {k: v for k, v in trainer.items() if k not in NOT_TRAINING},
        "seed": int(seed),
        "data": _fingerprint(*data_arrays),
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), fields


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CachedModel:
    model: object  # a keras.Model, or a detector's fitted state (model.pkl)
    history: dict[str, list[float]]
    trained_by_run: str


class ModelCache:
    MODEL_FILE = "model.keras"
    STATE_FILE = "model.pkl"  # a fitted object that is not a Keras model
    META_FILE = "meta.json"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key[:24]

    def load(self, key: str) -> tuple[CachedModel | None, str]:
        """(the cached model, "") or (None, why it cannot be used)."""
        folder = self.entry(key)
        if not folder.exists():
            return None, "not cached yet"
        try:
            meta = json.loads((folder / self.META_FILE).read_text())
        except (OSError, ValueError) as exc:
            return None, f"corrupt entry {folder}: unreadable {self.META_FILE} ({exc})"
        if meta.get("key") != key:
            return None, f"stale entry {folder}: its key does not match this configuration"
        name = meta.get("model_file", self.MODEL_FILE)
        model_path = folder / name
        try:
            checksum = _file_sha256(model_path)
        except OSError as exc:
            return None, f"corrupt entry {folder}: {exc}"
        if checksum != meta.get("model_sha256"):
            return None, f"corrupt entry {folder}: {name} checksum mismatch"
        try:
            if name == self.STATE_FILE:
                model = pickle.loads(model_path.read_bytes())
            else:
                import keras

                model = keras.models.load_model(model_path)
        except Exception as exc:  # any load failure means the entry cannot be trusted
            return None, f"corrupt entry {folder}: cannot load model ({exc})"
        return CachedModel(model, meta["history"], meta["trained_by_run"]), ""

    @contextmanager
    def training_lock(self, key: str, on_wait=None) -> Iterator[None]:
        """Hold the key's lock while loading-or-training, so one job trains and the others
        wait, then reuse. `on_wait()` is called once when another process holds it. The OS
        releases the lock when its holder dies, so a killed job never blocks the rest."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key[:24]}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _holds(self, folder: Path, key: str) -> bool:
        """A published entry for this key whose model file matches its checksum."""
        try:
            meta = json.loads((folder / self.META_FILE).read_text())
            checksum = _file_sha256(folder / meta.get("model_file", self.MODEL_FILE))
        except (OSError, ValueError):
            return False
        return meta.get("key") == key and meta.get("model_sha256") == checksum

    def staging(self) -> Path:
        """A fresh folder inside the cache, to build an entry in before publishing it."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def store(self, key: str, fields: dict, model, history: dict, run_id: str) -> Path:
        """Write the entry atomically (see publish); returns its folder."""
        import keras

        staging = self.staging()
        if isinstance(model, keras.Model):
            name = self.MODEL_FILE
            model.save(staging / name)
        else:
            name = self.STATE_FILE
            (staging / name).write_bytes(pickle.dumps(model))
        meta = {
            "key": key,
            "fields": fields,
            "model_sha256": _file_sha256(staging / name),
            "history": {k: [float(v) for v in values] for k, values in history.items()},
            "trained_by_run": run_id,
        }
        if name != self.MODEL_FILE:  # entries of Keras models stay as they were
            meta["model_file"] = name
        (staging / self.META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return self.publish(key, staging)

    def publish(self, key: str, staging: Path) -> Path:
        """Move a complete entry built in `staging` into place with one rename. A crash leaves
        the old entry or none, never half of one; when another process publishes the same key
        first, its entry is kept and this one discarded."""
        target = self.entry(key)
        for _ in range(10):
            try:
                os.rename(staging, target)  # atomic; fails if target exists
                return target
            except OSError:
                if self._holds(target, key):  # another writer published this key first
                    shutil.rmtree(staging, ignore_errors=True)
                    return target
                # a stale or corrupt entry: move it aside atomically, then retry
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
                try:
                    os.rename(target, trash / "old")
                except OSError:
                    pass  # someone else moved or replaced it already
                shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"could not publish cache entry {target}")
