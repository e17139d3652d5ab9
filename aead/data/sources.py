"""Data sources: a registry of named datasets (IDX arrays, class folders found through the
data lookup) and any folder of class folders given by its path. Every source returns an
ImageSet of uint8 images N×H×W×C with class labels; scenarios pick from it."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from aead.data.idx import read_idx
from aead.data.images import (
    EXTENSIONS,
    Conform,
    FolderCache,
    decode_files,
    estimate_bytes,
    image_files,
)
from aead.data.lookup import DATA_ENV_VAR, DataError, candidate_roots

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataSettings:
    """The data group's settings that shape what a source returns."""

    root: str | None = None
    download: bool = True
    conform: Conform = field(default_factory=Conform)
    test_fraction: float = 0.2
    split_seed: int = 0
    on_corrupt: str = "fail"
    cache_dir: str | None = None  # decoded folders; None: not cached
    max_memory_gb: float = 8.0

    @classmethod
    def of(cls, data: Mapping, cache_dir: str | os.PathLike | None = None) -> DataSettings:
        size = data.get("image_size")
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, int) else tuple(int(n) for n in size)
        channels = data.get("channels")
        return cls(
            root=data.get("root"),
            download=bool(data.get("download", True)),
            conform=Conform(
                None if channels is None else int(channels),
                size,
                str(data.get("interpolation") or "bilinear"),
            ),
            test_fraction=float(data.get("test_fraction", 0.2)),
            split_seed=int(data.get("split_seed", 0)),
            on_corrupt=str(data.get("on_corrupt", "fail")),
            cache_dir=str(cache_dir) if cache_dir and data.get("decode_cache", True) else None,
            max_memory_gb=float(data.get("max_memory_gb", 8.0)),
        )


@dataclass(frozen=True)
class ImageSet:
    """One split of one dataset."""

    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64 positions in `classes`, (N,)
    classes: tuple[str, ...]
    source: str  # where it was read from, for the run's records
    files: tuple[str, ...] = ()  # one per image, for sources that read files
    skipped: tuple[str, ...] = ()  # "path: reason" of files left out (data.on_corrupt=skip)

    def unit(self, index=slice(None)) -> np.ndarray:
        """The images at index as float32 in [0, 1]."""
        return to_unit(self.images[index])

    def class_index(self, value, setting: str, dataset: str) -> int:
        """A class by position (0-based, in `classes` order) or by name."""
        if isinstance(value, str) and value in self.classes:
            return self.classes.index(value)
        if known_class(value, self.classes):
            return int(value)
        raise DataError(unknown_class(setting, value, dataset, self.classes))


def unknown_class(setting: str, value, dataset: str, classes) -> str:
    listed = ", ".join(n if n == str(i) else f"{i} {n}" for i, n in enumerate(classes))
    return f"{setting}={value}: {dataset} has no such class; its classes are {listed}"


def known_class(value, classes) -> bool:
    """Whether value names one of classes, by position or by name."""
    if isinstance(value, str) and value in classes:
        return True
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes)


def to_unit(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1]: uint8 (as aead keeps them) divided by 255, float images
    (already in [0, 1]) as they are."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images as uint8 0-255 (to save or compress them): uint8 as they are, float images in
    [0, 1] scaled and rounded."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


def conform_arrays(images: np.ndarray, conform: Conform) -> np.ndarray:
    """Arrays (uint8 N×H×W×C) made to the settings' channels and size, as files are."""
    wrong_size = conform.size is not None and images.shape[1:3] != conform.size
    wrong_channels = conform.channels is not None and images.shape[3] != conform.channels
    if not (wrong_size or wrong_channels):
        return images
    from PIL import Image

    def one(array):
        image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        with_mode = conform.channels and image.mode != ("L" if conform.channels == 1 else "RGB")
        image = image.convert("L" if conform.channels == 1 else "RGB") if with_mode else image
        if wrong_size:
            resample = getattr(Image.Resampling, conform.interpolation.upper())
            image = image.resize((conform.size[1], conform.size[0]), resample)
        out = np.asarray(image, np.uint8)
        return out[..., None] if out.ndim == 2 else out

    return np.stack([one(a) for a in images])


class Source(ABC):
    """A dataset: its train and test splits as ImageSets."""

    name: str

    @abstractmethod
    def read(self, split: str, settings: DataSettings) -> ImageSet: ...

    def load(self, split: str, settings: DataSettings) -> ImageSet:
        found = self.read(split, settings)
        images = conform_arrays(found.images, settings.conform)
        return found if images is found.images else replace(found, images=images)


# ----------------------------------------------------------------------------- IDX


class IdxSource(Source):
    """MNIST-style IDX files <root>/<folder>/{train,t10k}-{images,labels}-idx?-ubyte[.gz]."""

    PREFIX = {"train": "train", "test": "t10k"}

    def __init__(self, name: str, folders: tuple[str, ...], classes: tuple[str, ...]):
        self.name, self.folders, self.classes = name, folders, classes

    def _find(self, folder: Path, split: str, kind: str) -> Path | None:
        stem = f"{self.PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
        return None

    def _from_root(self, root: Path, split: str) -> ImageSet | None:
        for folder_name in self.folders:
            folder = root / folder_name
            images_path = self._find(folder, split, "images")
            labels_path = self._find(folder, split, "labels")
            if images_path and labels_path:
                images, labels = read_idx(images_path), read_idx(labels_path)
                if images.ndim != 3 or images.dtype != np.uint8:
                    raise DataError(
                        f"{images_path}: expected uint8 images N×H×W, got {images.dtype} "
                        f"{images.shape}"
                    )
                if len(images) != len(labels):
                    raise DataError(
                        f"{folder}: {len(images)} images but {len(labels)} labels for split {split}"
                    )
                labels = labels.astype(np.int64)
                return ImageSet(images[..., None], labels, self.classes, str(folder))
        return None

    def _from_keras(self, split: str) -> ImageSet:
        return keras_download(self.name, self.classes, split)

    def read(self, split: str, settings: DataSettings) -> ImageSet:
        tried = []
        for origin, path in candidate_roots(settings.root):
            found = self._from_root(path.resolve(), split)
            if found is not None:
                return found
            folders = ", ".join(str(path / f) for f in self.folders)
            tried.append(f"{origin}: no {self.PREFIX[split]}-*-ubyte[.gz] files in {folders}")
        return _download_or_fail(self, split, settings, tried, self._hint(split))

    def _hint(self, split: str) -> str:
        return f"{self.folders[0]}/{self.PREFIX[split]}-images-idx3-ubyte.gz and the labels"


def keras_download(name: str, classes: tuple[str, ...], split: str) -> ImageSet:
    """keras.datasets.<name>: the real download, for machines with internet."""
    import keras

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = images[..., None] if images.ndim == 3 else images
    return ImageSet(
        images.astype(np.uint8), labels.reshape(-1).astype(np.int64), classes,
        f"keras.datasets.{name}",
    )  # fmt: skip


def _download_or_fail(source, split, settings: DataSettings, tried: list[str], hint: str):
    if settings.download:
        try:
            return source._from_keras(split)
        except Exception as exc:  # noqa: BLE001 - any download failure is reported with the rest
            tried.append(f"keras.datasets.{source.name}.load_data(): {type(exc).__name__}: {exc}")
    else:
        tried.append("keras.datasets download: disabled (data.download=false)")
    raise DataError(
        f"dataset '{source.name}' ({split} split) not found. Looked in:\n  - "
        + "\n  - ".join(tried)
        + f"\nSet data.root=<folder> or {DATA_ENV_VAR}=<folder> to a folder holding {hint}."
    )


# ----------------------------------------------------------------------------- class folders


class ClassFolders(Source):
    """A folder of class folders, ROOT/<class>/* (a seeded, stratified test split of
    data.test_fraction per class) or ROOT/{train,test}/<class>/*. The class of an image is
    its folder's name; classes are numbered in sorted name order."""

    def __init__(self, root: str | os.PathLike, setting: str = "scenario.dataset"):
        self.root = Path(root).expanduser()
        self.name = str(root)
        self.setting = setting

    def _class_folders(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _listing(self, folder: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
        classes = self._class_folders(folder)
        if not classes:
            loose = image_files(folder)
            advice = (
                f"it holds {len(loose)} images but no class folders; lay it out as "
                f"{folder}/<class>/*, or use scenario=folders with scenario.normal_dir={folder}"
                if loose
                else "it holds no class folders and no images"
            )
            raise DataError(f"{self.setting}={self.name}: {folder}: {advice}")
        files, labels = [], []
        for index, class_folder in enumerate(classes):
            found = image_files(class_folder)
            if not found:
                raise DataError(
                    f"{self.setting}={self.name}: class folder {class_folder} holds no images "
                    f"({', '.join(EXTENSIONS)}); add images or remove it"
                )
            files += found
            labels += [index] * len(found)
        return files, labels, tuple(c.name for c in classes)

    def read(self, split: str, settings: DataSettings) -> ImageSet:
        if not self.root.is_dir():
            raise DataError(f"{self.setting}={self.name}: no such folder ({self.root.resolve()})")
        split_folders = all((self.root / s).is_dir() for s in SPLITS)
        folder = self.root / split if split_folders else self.root
        files, labels, classes = self._listing(folder)
        if split_folders:
            other = tuple(c.name for c in self._class_folders(self.root / SPLITS[split == "train"]))
            if other != classes:
                raise DataError(
                    f"{self.setting}={self.name}: train/ and test/ hold different class folders "
                    f"({', '.join(classes)} vs {', '.join(other)})"
                )
        decoded = _decode_folder(self.root, files, settings, self.setting)
        kept = {f: i for i, f in enumerate(files)}
        labels = np.array([labels[kept[f]] for f in decoded.files], np.int64)
        images, names = decoded.images, [str(f) for f in decoded.files]
        if not split_folders:
            shares = _stratified_split(labels, settings.test_fraction, settings.split_seed)
            take = shares[split == "test"]
            images, labels, names = images[take], labels[take], [names[i] for i in take]
        source = str(self.root.resolve() / (split if split_folders else ""))
        return ImageSet(images, labels, classes, source, tuple(names), tuple(decoded.skipped))


def _stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions): the test share of each class, the same for every
    run seed."""
    if not 0 < fraction < 1:
        raise DataError(f"data.test_fraction={fraction}: not accepted; takes a number in (0, 1)")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _decode_folder(root: Path, files: list[Path], settings: DataSettings, setting: str):
    """Decode files (from the folder cache when they and the settings are unchanged), after
    checking they fit in memory."""
    need = estimate_bytes(files, settings.conform)
    if need > settings.max_memory_gb * 2**30:
        raise DataError(
            f"{setting}={root}: its {len(files)} images need about {need / 2**30:.1f} GB of "
            f"memory (data.max_memory_gb={settings.max_memory_gb:g}); lower data.image_size "
            "or raise data.max_memory_gb"
        )
    cache = FolderCache(settings.cache_dir) if settings.cache_dir else None
    key = FolderCache.key(root, files, settings.conform, settings.on_corrupt) if cache else ""
    decoded = cache.load(key, files) if cache else None
    if decoded is None:
        decoded = decode_files(files, settings.conform, settings.on_corrupt)
        if not decoded.files:
            raise DataError(f"{setting}={root}: none of its {len(files)} image files could be read")
        if cache:
            cache.store(key, files, decoded)
    return decoded


class NamedFolders(Source):
    """A class-folder dataset found by its folder name under the data roots (data.root,
    $AEAD_DATA_DIR, Debian's datasets), with keras.datasets as the download."""

    def __init__(self, name: str, folder: str, classes: tuple[str, ...]):
        self.name, self.folder, self.classes = name, folder, classes

    def _from_keras(self, split: str) -> ImageSet:
        return keras_download(self.name, self.classes, split)

    def read(self, split: str, settings: DataSettings) -> ImageSet:
        tried = []
        for origin, path in candidate_roots(settings.root):
            root = path.resolve() / self.folder
            if all((root / s).is_dir() for s in SPLITS):
                return ClassFolders(root).read(split, settings)
            tried.append(f"{origin}: no {self.folder}/train/ and {self.folder}/test/ in {path}")
        hint = f"{self.folder}/{{train,test}}/<class>/ image folders"
        return _download_or_fail(self, split, settings, tried, hint)


DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

DATASETS: dict[str, Source] = {}


def register_dataset(source: Source) -> Source:
    DATASETS[source.name] = source
    return source


register_dataset(IdxSource("mnist", ("mnist",), DIGITS))
register_dataset(IdxSource("fashion_mnist", ("fashion-mnist", "fashion_mnist"), FASHION_CLASSES))
register_dataset(NamedFolders("cifar10", "cifar10", CIFAR10_CLASSES))


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or Path(name).is_dir()


def source_for(name: str) -> Source:
    """The registered dataset `name`, or the class-folder dataset at path `name`."""
    if name in DATASETS:
        return DATASETS[name]
    if _looks_like_path(str(name)):
        return ClassFolders(name)
    raise DataError(
        f"scenario.dataset={name}: unknown dataset; choose one of {', '.join(sorted(DATASETS))} "
        "or give the path of a folder of class folders"
    )


@lru_cache(maxsize=16)
def _load_cached(name: str, split: str, settings: DataSettings, env_root: str | None) -> ImageSet:
    # env_root is unused here but part of the cache key: a changed AEAD_DATA_DIR reloads
    return source_for(name).load(split, settings)


def load_dataset(
    name: str, split: str, root: str | None = None, download: bool = True, settings=None
) -> ImageSet:
    """Split 'train' or 'test' of a registered dataset or a class-folder path, from the first
    place that has it (settings: a DataSettings, else root / download and the defaults)."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; choose 'train' or 'test'")
    settings = settings or DataSettings(root=root, download=download)
    return _load_cached(str(name), split, settings, os.environ.get(DATA_ENV_VAR))
