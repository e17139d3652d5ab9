"""Image data: IDX reading, dataset sources, and scenarios -> train / validation / test splits.

Images come back as float32 in [0, 1] with shape (N, 28, 28, 1); labels as int64.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from aead.errors import ConfigError

DATA_ENV_VAR = "AEAD_DATA_DIR"
DEBIAN_DATASETS = Path("/usr/share/datasets")

# Folder names a dataset may live under inside an IDX root (the first is canonical).
DATASET_FOLDERS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist"),
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# IDX type codes (third byte of the magic number) -> numpy dtype, big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(ConfigError):
    """Raised when data is missing or malformed; the message says where and why (and which
    setting points aead at other data)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in .gz) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: {len(raw)} bytes, too short for a header")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex()} "
            "(expected 00 00 <type> <ndim>)"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated: header needs {header_len} bytes, has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected:
        raise DataError(
            f"{path} is malformed: header says shape {shape} ({expected} bytes of data), "
            f"file holds {payload} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header_len)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz); tests use it."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"no IDX type for dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    body = array.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + body)


@dataclass(frozen=True)
class ImageSet:
    """One split of one dataset."""

    images: np.ndarray  # float32 in [0, 1], (N, 28, 28, 1)
    labels: np.ndarray  # int64 class ids, (N,)
    source: str  # where it was read from, for the run's records


def _to_unit_images(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.float32) / 255.0)[..., np.newaxis]


def _find_idx_file(folder: Path, split: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    stem = f"{SPLIT_PREFIX[split]}-{kind}-idx{ndim}-ubyte"
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_from_root(root: Path, name: str, split: str) -> ImageSet | None:
    for folder_name in DATASET_FOLDERS[name]:
        folder = root / folder_name
        images_path = _find_idx_file(folder, split, "images")
        labels_path = _find_idx_file(folder, split, "labels")
        if images_path and labels_path:
            images, labels = read_idx(images_path), read_idx(labels_path)
            if images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DataError(f"{images_path}: expected 28x28 images, got shape {images.shape}")
            if len(images) != len(labels):
                raise DataError(
                    f"{folder}: {len(images)} images but {len(labels)} labels for split {split}"
                )
            return ImageSet(_to_unit_images(images), labels.astype(np.int64), str(folder))
    return None


def _read_from_keras(name: str, split: str) -> ImageSet:
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[name]
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return ImageSet(_to_unit_images(images), labels.astype(np.int64), f"keras.datasets.{name}")


def candidate_roots(root: str | None) -> list[tuple[str, Path]]:
    """IDX roots in the order they are searched: config, environment, Debian's datasets."""
    roots = []
    if root:
        roots.append(("data.root", Path(root).expanduser()))
    if os.environ.get(DATA_ENV_VAR):
        roots.append((DATA_ENV_VAR, Path(os.environ[DATA_ENV_VAR]).expanduser()))
    roots.append(("Debian datasets", DEBIAN_DATASETS))
    return roots


@lru_cache(maxsize=16)
def _load_cached(name: str, split: str, root: str | None, env_root: str | None, download: bool):
    # env_root is unused here but part of the cache key: a changed AEAD_DATA_DIR reloads
    tried = []
    for origin, path in candidate_roots(root):
        found = _read_from_root(path.resolve(), name, split)
        if found is not None:
            return found
        folders = ", ".join(str(path / f) for f in DATASET_FOLDERS[name])
        tried.append(f"{origin}: no {SPLIT_PREFIX[split]}-*-ubyte[.gz] files in {folders}")
    if download:
        try:
            return _read_from_keras(name, split)
        except Exception as exc:  # any download failure is reported with the rest
            tried.append(f"keras.datasets.{name}.load_data(): {type(exc).__name__}: {exc}")
    else:
        tried.append("keras.datasets download: disabled (data.download=false)")
    raise DataError(
        f"dataset '{name}' ({split} split) not found. Looked in:\n  - "
        + "\n  - ".join(tried)
        + f"\nSet data.root=<folder> or {DATA_ENV_VAR}=<folder> to a folder holding "
        f"{DATASET_FOLDERS[name][0]}/{SPLIT_PREFIX[split]}-images-idx3-ubyte.gz and the labels."
    )


def load_dataset(name: str, split: str, root: str | None = None, download: bool = True) -> ImageSet:
    """Load split 'train' or 'test' of 'mnist' / 'fashion_mnist' from the first source with it."""
    if name not in DATASET_FOLDERS:
        raise DataError(f"unknown dataset '{name}'; choose one of {sorted(DATASET_FOLDERS)}")
    if split not in SPLIT_PREFIX:
        raise DataError(f"unknown split '{split}'; choose 'train' or 'test'")
    return _load_cached(name, split, root, os.environ.get(DATA_ENV_VAR), download)


# ----------------------------------------------------------------------------- scenarios


@dataclass
class LabeledSet:
    """Training images with labels (1 = anomaly), for supervised models only."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class Splits:
    """What a scenario hands the pipeline. Label 1 marks an anomaly."""

    x_train: np.ndarray  # autoencoder training images (normal, or an unlabeled mix)
    x_val: np.ndarray  # held-out split of the same data: val loss and threshold fitting
    x_test: np.ndarray
    y_test: np.ndarray
    description: dict[str, str] = field(default_factory=dict)
    # labeled training data for supervised models; None when the scenario has none
    labeled: LabeledSet | None = None
    # where a test image is also a training image (a scenario evaluated on the set it trains
    # on): its position in x_train, else -1; None when no test image is a training image
    test_train_index: np.ndarray | None = None


def _limit(images: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= len(images):
        return images
    return images[np.sort(rng.choice(len(images), size=int(limit), replace=False))]


def _validation_order(
    n: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions) of a random validation split of n images."""
    if not 0 < fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {fraction}")
    order = rng.permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return order[n_val:], order[:n_val]


def _split_validation(
    images: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    train, val = _validation_order(len(images), fraction, rng)
    return images[train], images[val]


def _labeled(normal: np.ndarray, anomalies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([normal, anomalies])
    y = np.concatenate([np.zeros(len(normal), np.int64), np.ones(len(anomalies), np.int64)])
    return x, y


def _shuffled(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> LabeledSet:
    order = rng.permutation(len(images))
    return LabeledSet(images[order], labels[order])


def _sample(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return pool[rng.choice(len(pool), size=min(n, len(pool)), replace=False)]


def _mixed_count(fraction: float, n_normal: int) -> int:
    """How many images of another class make up `fraction` of the mixed set."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"a mixed-in fraction must be in [0, 1), got {fraction}")
    return int(round(fraction * n_normal / (1 - fraction)))


def build_splits(scenario: Mapping, data: Mapping, seed: int) -> Splits:
    """Turn a scenario config into train / validation / test arrays, seeded."""
    rng = np.random.default_rng(seed)
    root, download = data.get("root"), bool(data.get("download", True))
    train_limit, test_limit = data.get("train_limit"), data.get("test_limit")
    val_fraction = float(data.get("val_fraction", 0.1))

    def load(name, split):
        return load_dataset(name, split, root=root, download=download)

    kind = scenario["name"]
    if kind in ("mnist_vs_fashion", "fashion_vs_mnist"):
        pair = ("mnist", "fashion_mnist")
        normal_name, anomaly_name = pair if kind == "mnist_vs_fashion" else pair[::-1]
        train = load(normal_name, "train")
        normal_train = _limit(train.images, train_limit, rng)
        x_train, x_val = _split_validation(normal_train, val_fraction, rng)
        normal_test = _limit(load(normal_name, "test").images, test_limit, rng)
        anomaly_test = _limit(load(anomaly_name, "test").images, test_limit, rng)
        x_test, y_test = _labeled(normal_test, anomaly_test)
        description = {"normal": normal_name, "anomaly": anomaly_name, "source": train.source}
        labeled = None
        n_labeled = int(scenario.get("labeled_anomalies") or 0)
        if n_labeled > 0:
            # an explicit sample of the anomaly dataset's *training* split, never its test split
            sample = _sample(load(anomaly_name, "train").images, n_labeled, rng)
            labeled = _shuffled(*_labeled(normal_train, sample), rng)
            description["labeled_anomalies"] = f"{len(sample)} {anomaly_name} training images"
        return Splits(x_train, x_val, x_test, y_test, description, labeled)

    if kind == "one_class":
        name, normal_class = scenario["dataset"], int(scenario["normal_class"])
        if not 0 <= normal_class <= 9:
            raise ConfigError(f"scenario.normal_class must be 0..9, got {normal_class}")
        train = load(name, "train")
        normal_train = _limit(train.images[train.labels == normal_class], train_limit, rng)
        description = {
            "normal": f"{name} class {normal_class}",
            "anomaly": f"{name} other classes",
            "source": train.source,
        }
        fraction = float(scenario.get("train_anomaly_fraction") or 0.0)
        labeled = None
        if fraction > 0:
            # Other classes mixed into training. Autoencoders see the mix unlabeled; only
            # supervised models use the labels.
            others = train.images[train.labels != normal_class]
            sample = _sample(others, _mixed_count(fraction, len(normal_train)), rng)
            labeled = _shuffled(*_labeled(normal_train, sample), rng)
            description["training_mix"] = f"{len(normal_train)} normal + {len(sample)} others"
            x_train, x_val = _split_validation(labeled.images, val_fraction, rng)
        else:
            x_train, x_val = _split_validation(normal_train, val_fraction, rng)
        test = load(name, "test")
        is_anomaly = (test.labels != normal_class).astype(np.int64)
        keep = _limit(np.arange(len(test.labels)), test_limit, rng)
        return Splits(x_train, x_val, test.images[keep], is_anomaly[keep], description, labeled)

    if kind == "contaminated":
        name = scenario["dataset"]
        normal_class, anomaly_class = int(scenario["normal_class"]), int(scenario["anomaly_class"])
        fraction = float(scenario["fraction"])
        train = load(name, "train")
        normal = _limit(train.images[train.labels == normal_class], train_limit, rng)
        pool = train.images[train.labels == anomaly_class]
        planted = _sample(pool, _mixed_count(fraction, len(normal)), rng)
        mixed = _shuffled(*_labeled(normal, planted), rng)
        train_at, val_at = _validation_order(len(mixed.images), val_fraction, rng)
        x_train, x_val = mixed.images[train_at], mixed.images[val_at]
        # The detector sees the set unlabeled and is evaluated on that same set, so there is
        # no separate labeled set a supervised model could honestly train on. Scores that
        # compare an image with the training images (latent_knn) are told which test image is
        # which training image, so that none is its own nearest neighbour.
        in_train = np.full(len(mixed.images), -1, np.int64)
        in_train[train_at] = np.arange(len(train_at))
        description = {
            "normal": f"{name} class {normal_class}",
            "anomaly": f"{len(planted)} planted {name} class {anomaly_class} ({fraction:.1%})",
            "source": train.source,
            "test_is_training": (
                f"the whole set is evaluated: its {len(train_at)} training and {len(val_at)} "
                "validation images; latent_knn leaves an image out of its own neighbours"
            ),
        }
        return Splits(
            x_train, x_val, mixed.images, mixed.labels, description, test_train_index=in_train
        )

    if kind == "noise":
        name = scenario["dataset"]
        train = load(name, "train")
        x_train, x_val = _split_validation(
            _limit(train.images, train_limit, rng), val_fraction, rng
        )
        normal_test = _limit(load(name, "test").images, test_limit, rng)
        n_noise = int(scenario.get("n_anomalies") or len(normal_test))
        noise = rng.uniform(0.0, 1.0, size=(n_noise, 28, 28, 1)).astype(np.float32)
        x_test, y_test = _labeled(normal_test, noise)
        description = {
            "normal": name,
            "anomaly": f"{n_noise} uniform-noise images",
            "source": train.source,
        }
        return Splits(x_train, x_val, x_test, y_test, description)

    raise ConfigError(
        f"unknown scenario '{kind}'; choose mnist_vs_fashion, fashion_vs_mnist, one_class, "
        "contaminated or noise"
    )
