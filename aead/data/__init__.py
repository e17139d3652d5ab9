"""Images for a run: data sources (registered datasets: IDX arrays and image folders, and any
folder of class folders by its path) and the scenarios that turn them into splits."""

from aead.data.idx import read_idx, write_idx
from aead.data.images import EXTENSIONS, INTERPOLATIONS, Conform, decode, image_files
from aead.data.lookup import DATA_ENV_VAR, DEBIAN_DATASETS, DataError, candidate_roots
from aead.data.scenarios import SCENARIOS, LabeledSet, Splits, build_splits
from aead.data.sources import (
    DATASETS,
    DataSettings,
    ImageSet,
    load_dataset,
    register_dataset,
    to_uint8,
    to_unit,
)

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "DEBIAN_DATASETS",
    "EXTENSIONS",
    "INTERPOLATIONS",
    "SCENARIOS",
    "Conform",
    "DataError",
    "DataSettings",
    "ImageSet",
    "LabeledSet",
    "Splits",
    "build_splits",
    "candidate_roots",
    "decode",
    "image_files",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "to_uint8",
    "to_unit",
    "write_idx",
]
