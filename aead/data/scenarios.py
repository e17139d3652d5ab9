"""Scenarios: what is normal and what is an anomaly, as train / validation / test splits.

Each scenario is a registered function of the scenario config; every one reads its images
through the data sources (any registered dataset or folder). Splits hold the images as read,
uint8 N×H×W×C (a quarter of float32's memory), converted to float in [0, 1] a batch at a time
where a model or score uses them (`to_unit`); generated images (the noise scenario's) are
float32 in [0, 1]. Labels: 1 = anomaly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aead.data.images import Conform, decode, image_files
from aead.data.lookup import DataError
from aead.data.sources import (
    DataSettings,
    ImageSet,
    _decode_folder,
    _stratified_split,
    load_dataset,
    to_unit,
)
from aead.errors import ConfigError


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
    # ground-truth anomaly masks of the test images, bool N×H×W (all False for normal ones);
    # None when the data has none
    test_masks: np.ndarray | None = None
    test_files: list[str] | None = None  # the file of each test image, for sources with files
    skipped_files: list[str] = field(default_factory=list)  # unreadable files left out


@dataclass
class Inputs:
    """What a scenario builds from: the data settings, limits and the run's seeded RNG."""

    settings: DataSettings
    train_limit: int | None
    test_limit: int | None
    val_fraction: float
    rng: np.random.Generator
    skipped: list[str] = field(default_factory=list)

    def load(self, name: str, split: str) -> ImageSet:
        found = load_dataset(name, split, settings=self.settings)
        self.skipped += [s for s in found.skipped if s not in self.skipped]
        return found

    def limit(self, images: np.ndarray, test: bool = False) -> np.ndarray:
        return _limit(images, self.test_limit if test else self.train_limit, self.rng)

    def split_validation(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        train, val = _validation_order(len(images), self.val_fraction, self.rng)
        return images[train], images[val]


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


def _class_text(found: ImageSet, index: int) -> str:
    name = found.classes[index]
    return name if name == str(index) else f"{index} ({name})"


def _of_classes(found: ImageSet, classes, setting: str, dataset: str) -> np.ndarray:
    """found's images of the given classes (a list of indices or names; None: every class)."""
    if classes is None:
        return found.images
    wanted = [found.class_index(c, setting, dataset) for c in _as_list(classes)]
    return found.images[np.isin(found.labels, wanted)]


def _as_list(value) -> list:
    """A setting that takes one value or a list of them, as a list."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


SCENARIOS: dict[str, Callable[[Mapping, Inputs], Splits]] = {}


def scenario(*names: str):
    def register(builder):
        for name in names:
            SCENARIOS[name] = builder
        return builder

    return register


@scenario("normal_vs_anomaly", "mnist_vs_fashion", "fashion_vs_mnist")
def _normal_vs_anomaly(cfg: Mapping, data: Inputs) -> Splits:
    """Train on the normal set; test = its test images + the anomaly set's test images."""
    kind = cfg["name"]
    if kind == "normal_vs_anomaly":
        normal, anomaly = dict(cfg["normal"]), dict(cfg["anomaly"])
        anomaly.setdefault("dataset", normal["dataset"])
    else:  # the classic pairs: every class of one dataset vs every class of the other
        pair = ("mnist", "fashion_mnist")
        first, second = pair if kind == "mnist_vs_fashion" else pair[::-1]
        normal, anomaly = {"dataset": first}, {"dataset": second}
    normal_name, anomaly_name = normal["dataset"], anomaly.get("dataset") or normal["dataset"]
    normal_classes, anomaly_classes = normal.get("classes"), anomaly.get("classes")

    train = data.load(normal_name, "train")
    pick = _of_classes(train, normal_classes, "scenario.normal.classes", normal_name)
    normal_train = data.limit(pick)
    x_train, x_val = data.split_validation(normal_train)
    normal_test_set = data.load(normal_name, "test")
    normal_test = data.limit(
        _of_classes(normal_test_set, normal_classes, "scenario.normal.classes", normal_name), True
    )
    anomaly_set = data.load(anomaly_name, "test")
    anomaly_test = data.limit(
        _of_classes(anomaly_set, anomaly_classes, "scenario.anomaly.classes", anomaly_name), True
    )
    _same_shape(normal_test, anomaly_test, normal_name, anomaly_name)
    x_test, y_test = _labeled(normal_test, anomaly_test)

    def named(name, classes):
        shown = ", ".join(map(str, _as_list(classes))) if classes is not None else ""
        return f"{name} classes {shown}" if shown else name

    description = {
        "normal": named(normal_name, normal_classes),
        "anomaly": named(anomaly_name, anomaly_classes),
        "source": train.source,
    }
    labeled = None
    n_labeled = int(cfg.get("labeled_anomalies") or 0)
    if n_labeled > 0:
        # an explicit sample of the anomaly set's *training* split, never its test split
        pool = _of_classes(
            data.load(anomaly_name, "train"), anomaly_classes, "scenario.anomaly.classes",
            anomaly_name,
        )  # fmt: skip
        sample = _sample(pool, n_labeled, data.rng)
        labeled = _shuffled(*_labeled(normal_train, sample), data.rng)
        description["labeled_anomalies"] = f"{len(sample)} {anomaly_name} training images"
    return Splits(x_train, x_val, x_test, y_test, description, labeled)


def _same_shape(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise DataError(
            f"{a_name} images are {'×'.join(map(str, a.shape[1:]))} but {b_name} images are "
            f"{'×'.join(map(str, b.shape[1:]))}; set data.image_size and data.channels to "
            "bring them to one shape"
        )


@scenario("one_class")
def _one_class(cfg: Mapping, data: Inputs) -> Splits:
    """One class is normal; the other classes of the test split are anomalies."""
    name = cfg["dataset"]
    train = data.load(name, "train")
    normal_class = train.class_index(cfg["normal_class"], "scenario.normal_class", name)
    normal_train = data.limit(train.images[train.labels == normal_class])
    description = {
        "normal": f"{name} class {_class_text(train, normal_class)}",
        "anomaly": f"{name} other classes",
        "source": train.source,
    }
    fraction = float(cfg.get("train_anomaly_fraction") or 0.0)
    labeled = None
    if fraction > 0:
        # Other classes mixed into training. Autoencoders see the mix unlabeled; only
        # supervised models use the labels.
        others = train.images[train.labels != normal_class]
        sample = _sample(others, _mixed_count(fraction, len(normal_train)), data.rng)
        labeled = _shuffled(*_labeled(normal_train, sample), data.rng)
        description["training_mix"] = f"{len(normal_train)} normal + {len(sample)} others"
        x_train, x_val = data.split_validation(labeled.images)
    else:
        x_train, x_val = data.split_validation(normal_train)
    test = data.load(name, "test")
    is_anomaly = (test.labels != normal_class).astype(np.int64)
    keep = data.limit(np.arange(len(test.labels)), True)
    files = [test.files[i] for i in keep] if test.files else None
    return Splits(
        x_train, x_val, test.images[keep], is_anomaly[keep], description, labeled, test_files=files
    )


@scenario("contaminated")
def _contaminated(cfg: Mapping, data: Inputs) -> Splits:
    """An unlabeled training set of one class with a fraction of another mixed in; the
    detector is evaluated on that same set (how many planted images does it flag?)."""
    name = cfg["dataset"]
    train = data.load(name, "train")
    normal_class = train.class_index(cfg["normal_class"], "scenario.normal_class", name)
    anomaly_class = train.class_index(cfg["anomaly_class"], "scenario.anomaly_class", name)
    fraction = float(cfg["fraction"])
    normal = data.limit(train.images[train.labels == normal_class])
    pool = train.images[train.labels == anomaly_class]
    planted = _sample(pool, _mixed_count(fraction, len(normal)), data.rng)
    mixed = _shuffled(*_labeled(normal, planted), data.rng)
    train_at, val_at = _validation_order(len(mixed.images), data.val_fraction, data.rng)
    x_train, x_val = mixed.images[train_at], mixed.images[val_at]
    # The detector sees the set unlabeled and is evaluated on that same set, so there is
    # no separate labeled set a supervised model could honestly train on. Scores that
    # compare an image with the training images (latent_knn) are told which test image is
    # which training image, so that none is its own nearest neighbour.
    in_train = np.full(len(mixed.images), -1, np.int64)
    in_train[train_at] = np.arange(len(train_at))
    description = {
        "normal": f"{name} class {_class_text(train, normal_class)}",
        "anomaly": (
            f"{len(planted)} planted {name} class {_class_text(train, anomaly_class)} "
            f"({fraction:.1%})"
        ),
        "source": train.source,
        "test_is_training": (
            f"the whole set is evaluated: its {len(train_at)} training and {len(val_at)} "
            "validation images; latent_knn leaves an image out of its own neighbours"
        ),
    }
    return Splits(
        x_train, x_val, mixed.images, mixed.labels, description, test_train_index=in_train
    )


@scenario("noise")
def _noise(cfg: Mapping, data: Inputs) -> Splits:
    """Normal test images plus uniform-noise images of the same shape as anomalies."""
    name = cfg["dataset"]
    train = data.load(name, "train")
    x_train, x_val = data.split_validation(data.limit(train.images))
    normal_test = to_unit(data.limit(data.load(name, "test").images, True))
    n_noise = int(cfg.get("n_anomalies") or len(normal_test))
    noise = data.rng.uniform(0.0, 1.0, size=(n_noise, *normal_test.shape[1:]))
    x_test, y_test = _labeled(normal_test, noise.astype(np.float32))
    description = {
        "normal": name,
        "anomaly": f"{n_noise} uniform-noise images",
        "source": train.source,
    }
    return Splits(x_train, x_val, x_test, y_test, description)


# ----------------------------------------------------------------------------- folders


def _folder_list(value, setting: str) -> list[Path]:
    if value is None or value == "???":
        raise DataError(f"{setting} is not set: give the folder of images")
    return [Path(str(v)).expanduser() for v in _as_list(value)]


def _read_folder(folder: Path, setting: str, settings: DataSettings, data: Inputs):
    if not folder.is_dir():
        raise DataError(f"{setting}={folder}: no such folder ({folder.resolve()})")
    files = image_files(folder)
    if not files:
        raise DataError(f"{setting}={folder}: no image files in it (png, jpg, bmp, tif, webp)")
    decoded = _decode_folder(folder, files, settings, setting)
    data.skipped += decoded.skipped
    return decoded


def _mask_index(mask_dir: Path) -> dict[tuple[Path, str], Path]:
    """The mask files under mask_dir by (folder, stem), listed once (the first of equal stems
    in name order)."""
    index: dict[tuple[Path, str], Path] = {}
    for path in image_files(mask_dir):
        index.setdefault((path.parent, path.stem), path)
    return index


def _mask_for(image: Path, image_dir: Path, mask_dir: Path, index) -> Path | None:
    """mask_dir/<relative path>, or MVTec AD's mask_dir/<abnormal folder name>/<relative
    path>, with the image's stem or stem_mask and any image extension."""
    relative = image.relative_to(image_dir)
    for folder in (mask_dir / relative.parent, mask_dir / image_dir.name / relative.parent):
        for stem in (relative.stem, f"{relative.stem}_mask"):
            if (folder, stem) in index:
                return index[(folder, stem)]
    return None


def _masks(cfg: Mapping, abnormal_dirs, abnormal, shape, settings: DataSettings) -> np.ndarray:
    """One bool H×W mask per abnormal image, matched by file stem (stem or stem_mask)."""
    mask_dirs = _folder_list(cfg["mask_dir"], "scenario.mask_dir")
    if len(mask_dirs) == 1:
        mask_dirs = mask_dirs * len(abnormal_dirs)
    if len(mask_dirs) != len(abnormal_dirs):
        raise DataError(
            f"scenario.mask_dir: {len(mask_dirs)} folders for {len(abnormal_dirs)} "
            "scenario.abnormal_dir folders; give one, or one per abnormal folder"
        )
    for folder in mask_dirs:
        if not folder.is_dir():
            raise DataError(f"scenario.mask_dir={folder}: no such folder ({folder.resolve()})")
    conform = Conform(channels=1, size=shape, interpolation="nearest")
    indexes = {folder: _mask_index(folder) for folder in set(mask_dirs)}
    masks, used = [], set()
    for image_dir, mask_dir, decoded in zip(abnormal_dirs, mask_dirs, abnormal, strict=True):
        for image in decoded.files:
            mask = _mask_for(image, image_dir, mask_dir, indexes[mask_dir])
            if mask is None:
                raise DataError(
                    f"scenario.mask_dir={mask_dir}: no mask for {image} (looked for "
                    f"{mask_dir / image.relative_to(image_dir).with_suffix('')}[_mask].png or "
                    "another image extension)"
                )
            used.add(mask)
            masks.append(decode(mask, conform)[..., 0] > 0)
    for mask_dir, index in indexes.items():
        for extra in index.values():
            if extra not in used:
                raise DataError(
                    f"scenario.mask_dir={mask_dir}: mask {extra} matches no abnormal image"
                )
    return np.stack(masks)


@scenario("folders")
def _folders(cfg: Mapping, data: Inputs) -> Splits:
    """The inspection layout (anomalib's Folder): normal_dir (training, and a held-out
    data.test_fraction for testing unless normal_test_dir is given), abnormal_dir (test
    anomalies: one folder or a list), optional mask_dir (ground truth, matched by stem)."""
    settings = data.settings
    normal_dir = _folder_list(cfg.get("normal_dir"), "scenario.normal_dir")[0]
    abnormal_dirs = _folder_list(cfg.get("abnormal_dir"), "scenario.abnormal_dir")
    normal = _read_folder(normal_dir, "scenario.normal_dir", settings, data)
    if cfg.get("normal_test_dir"):
        test_dir = _folder_list(cfg["normal_test_dir"], "scenario.normal_test_dir")[0]
        normal_test = _read_folder(test_dir, "scenario.normal_test_dir", settings, data)
        train_images, test_images = normal.images, normal_test.images
        test_files = [str(f) for f in normal_test.files]
    else:
        labels = np.zeros(len(normal.images), np.int64)
        train_at, test_at = _stratified_split(labels, settings.test_fraction, settings.split_seed)
        train_images, test_images = normal.images[train_at], normal.images[test_at]
        test_files = [str(normal.files[i]) for i in test_at]
    abnormal = [
        _read_folder(folder, "scenario.abnormal_dir", settings, data) for folder in abnormal_dirs
    ]
    anomalies = np.concatenate([d.images for d in abnormal])
    _same_shape(test_images, anomalies, str(normal_dir), str(abnormal_dirs[0]))
    x_train, x_val = data.split_validation(data.limit(train_images))
    x_test, y_test = _labeled(test_images, anomalies)
    test_files += [str(f) for d in abnormal for f in d.files]
    masks = None
    if cfg.get("mask_dir"):
        shape = tuple(anomalies.shape[1:3])
        abnormal_masks = _masks(cfg, abnormal_dirs, abnormal, shape, settings)
        masks = np.concatenate([np.zeros((len(test_images), *shape), bool), abnormal_masks])
    description = {
        "normal": str(normal_dir),
        "anomaly": ", ".join(str(d) for d in abnormal_dirs),
        "source": str(normal_dir.resolve()),
        "files": str(len(set(map(str, normal.files)) | set(test_files))),
    }
    return Splits(
        x_train, x_val, x_test, y_test, description, test_masks=masks, test_files=test_files,
    )  # fmt: skip


def build_splits(
    scenario: Mapping, data: Mapping, seed: int, cache_dir: str | os.PathLike | None = None
) -> Splits:
    """Turn a scenario config into train / validation / test arrays, seeded. cache_dir: where
    decoded image folders are kept (data.decode_cache)."""
    kind = scenario["name"]
    if kind not in SCENARIOS:
        choices = ", ".join(sorted(SCENARIOS))
        raise ConfigError(f"unknown scenario '{kind}'; choose one of {choices}")
    inputs = Inputs(
        settings=DataSettings.of(data, cache_dir),
        train_limit=data.get("train_limit"),
        test_limit=data.get("test_limit"),
        val_fraction=float(data.get("val_fraction", 0.1)),
        rng=np.random.default_rng(seed),
    )
    splits = SCENARIOS[kind](scenario, inputs)
    splits.skipped_files = inputs.skipped
    return splits
