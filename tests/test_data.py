import gzip

import numpy as np
import pytest

from aead.data import (
    DataError,
    build_splits,
    load_dataset,
    lookup,
    read_idx,
    sources,
    to_unit,
    write_idx,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _fake_dataset(root, folder="mnist", n=12, split="train"):
    target = root / folder
    target.mkdir(parents=True, exist_ok=True)
    prefix = sources.IdxSource.PREFIX[split]
    images = np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)
    labels = (np.arange(n) % 10).astype(np.uint8)
    write_idx(target / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(target / f"{prefix}-labels-idx1-ubyte", labels)  # plain, not gzipped
    return images, labels


@pytest.fixture(autouse=True)
def _fresh_loader_cache():
    sources._load_cached.cache_clear()
    yield
    sources._load_cached.cache_clear()


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_idx_reads_real_mnist_header(data_dir):
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    # class counts of the official MNIST test set
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x08\x03\x00\x00garbage", "bad magic number"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]), "header says shape (5,)"),
    ],
)
def test_malformed_idx_gives_clear_error(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=None) as err:
        read_idx(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_not_gzip_despite_name(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1]))[:-6])
    with pytest.raises(DataError):
        read_idx(path)


def test_images_kept_as_uint8_and_scaled_to_unit_floats_on_use(tmp_path):
    images, labels = _fake_dataset(tmp_path)
    loaded = load_dataset("mnist", "train", root=str(tmp_path), download=False)
    assert loaded.images.shape == (12, 28, 28, 1) and loaded.images.dtype == np.uint8
    np.testing.assert_array_equal(loaded.images[..., 0], images)
    assert loaded.unit().dtype == np.float32
    np.testing.assert_allclose(loaded.unit()[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(loaded.labels, labels)


def test_config_root_comes_before_environment(tmp_path, monkeypatch):
    _fake_dataset(tmp_path / "a", n=5)
    _fake_dataset(tmp_path / "b", n=7)
    monkeypatch.setenv(lookup.DATA_ENV_VAR, str(tmp_path / "b"))
    assert len(load_dataset("mnist", "train", root=str(tmp_path / "a")).images) == 5
    assert len(load_dataset("mnist", "train", root=None).images) == 7


def test_debian_folder_is_searched(tmp_path, monkeypatch):
    _fake_dataset(tmp_path, folder="fashion-mnist", n=4, split="test")
    monkeypatch.delenv(lookup.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(lookup, "DEBIAN_DATASETS", tmp_path)
    assert len(load_dataset("fashion_mnist", "test", download=False).images) == 4


def test_missing_data_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv(lookup.DATA_ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(lookup, "DEBIAN_DATASETS", tmp_path / "debian")

    def offline(self, split):
        raise OSError("network unreachable")

    monkeypatch.setattr(sources.IdxSource, "_from_keras", offline)
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", "train", root=str(tmp_path / "cfg"))
    message = str(err.value)
    for place in (
        "data.root",
        tmp_path / "cfg",
        lookup.DATA_ENV_VAR,
        tmp_path / "env",
        tmp_path / "debian",
        "keras.datasets.fashion_mnist",
        "network unreachable",
    ):
        assert str(place) in message


def test_real_mnist_training_set_is_complete(data_dir):
    train = load_dataset("mnist", "train", download=False)
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    # class counts of the official MNIST training set
    assert np.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS


def test_contaminated_scenario_plants_about_one_percent(data_dir):
    scenario = {
        "name": "contaminated",
        "dataset": "mnist",
        "normal_class": 1,
        "anomaly_class": 3,
        "fraction": 0.01,
    }
    splits = build_splits(scenario, {"download": False}, seed=0)
    ones = MNIST_TRAIN_COUNTS[1]  # 6,742 ones, plus round(0.01 * 6742 / 0.99) = 68 threes
    assert splits.y_test.sum() == 68 and len(splits.x_test) == ones + 68
    # the model trains on that same unlabeled set (train + validation = evaluated set)
    assert len(splits.x_train) + len(splits.x_val) == len(splits.x_test)


def test_one_class_labels(data_dir):
    scenario = {"name": "one_class", "dataset": "mnist", "normal_class": 0}
    splits = build_splits(scenario, {"download": False, "test_limit": 1000}, seed=0)
    assert len(splits.x_train) + len(splits.x_val) == MNIST_TRAIN_COUNTS[0]  # every training 0
    assert len(splits.x_test) == 1000 and 0 < splits.y_test.mean() < 1


def test_a_class_the_dataset_lacks_is_refused_listing_its_classes(data_dir):
    scenario = {"name": "one_class", "dataset": "mnist", "normal_class": 10}
    with pytest.raises(DataError) as err:
        build_splits(scenario, {"download": False}, seed=0)
    assert str(err.value) == (
        "scenario.normal_class=10: mnist has no such class; its classes are "
        + ", ".join(str(d) for d in range(10))
    )


def test_noise_scenario_and_seed(data_dir):
    scenario = {"name": "noise", "dataset": "mnist", "n_anomalies": 50}
    a = build_splits(scenario, {"download": False, "test_limit": 100}, seed=3)
    b = build_splits(scenario, {"download": False, "test_limit": 100}, seed=3)
    assert a.y_test.sum() == 50 and len(a.y_test) == 150
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario 'nope'; choose one of contaminated"):
        build_splits({"name": "nope"}, {}, seed=0)


# SHA-256 (first 16 hex digits) of each scenario's arrays, seed 7, computed with the IDX-only
# loader that came before image folders (commit 17889c5): the same images, in the same order,
# as float32 in [0, 1], so MNIST and Fashion-MNIST runs keep their figures.
SPLIT_DIGESTS = {
    "mnist_vs_fashion": "6d0cced85a98e816",
    "fashion_vs_mnist": "5d9223127f01a8cd",
    "one_class": "1425f46753f5bcab",
    "contaminated": "3ac7b1fa0df6318c",
    "noise": "c6b0fc43e139ed1d",
}
SPLIT_CASES = {
    "mnist_vs_fashion": (
        {"name": "mnist_vs_fashion", "labeled_anomalies": 50},
        {"train_limit": 600, "test_limit": 200},
    ),
    "fashion_vs_mnist": (
        {"name": "fashion_vs_mnist", "labeled_anomalies": 0},
        {"train_limit": 600, "test_limit": 200},
    ),
    "one_class": (
        {
            "name": "one_class",
            "dataset": "fashion_mnist",
            "normal_class": 3,
            "train_anomaly_fraction": 0.1,
        },
        {"test_limit": 500},
    ),
    "contaminated": (
        {
            "name": "contaminated",
            "dataset": "mnist",
            "normal_class": 1,
            "anomaly_class": 3,
            "fraction": 0.01,
        },
        {},
    ),
    "noise": (
        {"name": "noise", "dataset": "mnist", "n_anomalies": None},
        {"train_limit": 600, "test_limit": 200},
    ),
}


@pytest.mark.parametrize("name", sorted(SPLIT_DIGESTS))
def test_scenarios_give_the_arrays_they_gave_before_image_folders(data_dir, name):
    import hashlib

    scenario, limits = SPLIT_CASES[name]
    splits = build_splits(scenario, {"download": False, "val_fraction": 0.1, **limits}, seed=7)
    images = [splits.x_train, splits.x_val, splits.x_test]
    if splits.labeled is not None:
        images.append(splits.labeled.images)
    # kept as read (uint8, a quarter of float32's memory); the noise scenario's test set
    # mixes generated float noise in
    kept = images[:2] + images[3:] if name == "noise" else images
    assert all(array.dtype == np.uint8 for array in kept)
    # converted as models and scores convert them, they are the arrays of before, bit for bit
    arrays = [to_unit(array) for array in images[:3]] + [splits.y_test]
    if splits.labeled is not None:
        arrays += [to_unit(splits.labeled.images), splits.labeled.labels]
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest()[:16] == SPLIT_DIGESTS[name]
