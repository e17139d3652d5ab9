"""The synthetic defect data set: seeded, laid out as MVTec AD / anomalib folders, every
defect with a mask, readable by scenario=folders with MVTec's mask layout."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from aead.data import build_splits, image_files
from aead.data.synthetic import DEFECTS, TEXTURES, generate

SMALL = {"size": 64, "n_train": 6, "n_test_good": 3, "n_per_defect": 2}


def _digest(root) -> str:
    digest = hashlib.sha256()
    for path in image_files(root):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_same_seed_writes_the_same_files_and_another_seed_others(tmp_path):
    generate(tmp_path / "a", seed=1, **SMALL, categories=("grain",))
    generate(tmp_path / "b", seed=1, **SMALL, categories=("grain",))
    generate(tmp_path / "c", seed=2, **SMALL, categories=("grain",))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_layout_modes_and_masks(tmp_path):
    info = generate(tmp_path, seed=0, **SMALL)
    assert set(info["categories"]) == set(TEXTURES)
    for category, what in info["categories"].items():
        folder = tmp_path / category
        assert len(image_files(folder / "train" / "good")) == 6
        assert len(image_files(folder / "test" / "good")) == 3
        mode = Image.open(folder / "train" / "good" / "000.png").mode
        assert mode == ("RGB" if what["channels"] == 3 else "L"), category
        for defect in DEFECTS:
            images = image_files(folder / "test" / defect)
            masks = image_files(folder / "ground_truth" / defect)
            assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
            for mask in masks:
                pixels = np.asarray(Image.open(mask))
                assert set(np.unique(pixels)) <= {0, 255}
                assert 0 < (pixels > 0).mean() < 0.3, (category, defect, mask.name)
    assert {"woven", "grain"} == {c for c, w in info["categories"].items() if w["channels"] == 3}


def test_folders_scenario_reads_it_with_mvtec_masks(tmp_path):
    generate(tmp_path, seed=0, **SMALL, categories=("carpet",))
    root = tmp_path / "carpet"
    scenario = {
        "name": "folders",
        "normal_dir": str(root / "train" / "good"),
        "normal_test_dir": str(root / "test" / "good"),
        "abnormal_dir": [str(root / "test" / d) for d in DEFECTS],
        "mask_dir": str(root / "ground_truth"),  # MVTec: ground_truth/<defect>/NNN_mask.png
    }
    splits = build_splits(scenario, {"download": False, "decode_cache": False}, seed=0)
    n_defective = 2 * len(DEFECTS)
    assert splits.x_test.shape == (3 + n_defective, 64, 64, 1)
    assert splits.test_masks.shape == (3 + n_defective, 64, 64)
    assert not splits.test_masks[:3].any() and all(m.any() for m in splits.test_masks[3:])
