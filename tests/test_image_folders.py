"""Image folders as a data source: files the tests write (every format and mode aead reads,
odd and non-square sizes), both folder layouts, masks, bad input, the decode cache, and a
small slice of the real CIFAR-10 JPEG folders."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from aead.data import Conform, DataError, DataSettings, build_splits, decode, image_files, sources

RNG = np.random.default_rng(0)


def _pattern(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    """An RGB uint8 image: class 'stripes' (horizontal) or 'bars' (vertical), with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    wave = np.sin((y if kind == "stripes" else x) * 0.9 + rng.uniform(0, 6)) * 0.5 + 0.5
    colour = rng.uniform(0.5, 1.0, size=3)
    image = wave[..., None] * colour + rng.normal(0, 0.03, size=(height, width, 3))
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def make_class_folders(root, n=12, size=(20, 28), ext=".png", classes=("bars", "stripes")):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = _pattern(name if name in ("bars", "stripes") else "bars", *size, 100 * c + i)
            Image.fromarray(image).save(root / name / f"{i:03d}{ext}")
    return root


def _settings(**changes) -> dict:
    return {"download": False, "decode_cache": False, **changes}


@pytest.fixture(autouse=True)
def _fresh_loader_cache():
    sources._load_cached.cache_clear()
    yield
    sources._load_cached.cache_clear()


# ----------------------------------------------------------------------------- decoding


def test_every_format_and_mode_decodes_to_its_pixels(tmp_path):
    gray = RNG.integers(0, 256, size=(7, 9), dtype=np.uint8)
    rgb = RNG.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    lossless = {
        "g.png": (Image.fromarray(gray, "L"), gray[..., None]),
        "c.PNG": (Image.fromarray(rgb, "RGB"), rgb),  # upper-case extension
        "c.bmp": (Image.fromarray(rgb, "RGB"), rgb),
        "g.tif": (Image.fromarray(gray, "L"), gray[..., None]),
        "c.tiff": (Image.fromarray(rgb, "RGB"), rgb),
        "c.webp": (Image.fromarray(rgb, "RGB"), rgb),
    }
    for name, (image, _) in lossless.items():
        image.save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    for name, (_, expected) in lossless.items():
        np.testing.assert_array_equal(decode(tmp_path / name, Conform()), expected, err_msg=name)

    # RGBA: the alpha channel is dropped
    rgba = np.dstack([rgb, np.full((7, 9), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(decode(tmp_path / "a.png", Conform()), rgb)
    # 16-bit gray (PNG and TIFF): 0..65535 scaled to 0..255
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    Image.fromarray(deep).save(tmp_path / "d.tif")
    for name in ("d.png", "d.tif"):
        np.testing.assert_array_equal(decode(tmp_path / name, Conform()), gray[..., None])
    # palettes: a gray palette stays one channel, a colour one becomes RGB
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "gp.png")
    assert decode(tmp_path / "gp.png", Conform()).shape == (7, 9, 1)
    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "cp.png")
    assert decode(tmp_path / "cp.png", Conform()).shape == (7, 9, 3)
    # JPEG is lossy: close, not equal
    smooth = np.tile(np.linspace(0, 255, 9, dtype=np.uint8), (7, 1))
    Image.fromarray(smooth, "L").save(tmp_path / "j.JPG", quality=95)
    assert np.abs(decode(tmp_path / "j.JPG", Conform()).astype(int)[..., 0] - smooth).max() <= 8


def test_channels_and_size_are_converted_as_configured(tmp_path):
    rgb = RNG.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    as_gray = decode(tmp_path / "c.png", Conform(channels=1))
    expected = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]  # ITU-R 601-2 luma
    np.testing.assert_array_equal(as_gray, expected)
    resized = decode(tmp_path / "c.png", Conform(channels=3, size=(11, 7), interpolation="nearest"))
    assert resized.shape == (11, 7, 3)  # height 11, width 7: non-square
    assert set(map(tuple, resized.reshape(-1, 3))) <= set(map(tuple, rgb.reshape(-1, 3)))
    with pytest.raises(DataError, match="data.interpolation=cubic: not accepted"):
        Conform(interpolation="cubic")


def test_only_image_files_are_read(tmp_path):
    make_class_folders(tmp_path, n=2)
    (tmp_path / "bars" / "notes.txt").write_text("not an image")
    (tmp_path / "bars" / ".hidden.png").write_bytes(b"")
    names = [p.name for p in image_files(tmp_path / "bars")]
    assert names == ["000.png", "001.png"]


# ----------------------------------------------------------------------------- class folders


def test_class_folders_without_splits_get_a_stratified_seeded_test_share(tmp_path):
    root = make_class_folders(tmp_path / "shapes", n=10)
    scenario = {"name": "one_class", "dataset": str(root), "normal_class": "stripes"}
    data = _settings(test_fraction=0.3)
    a = build_splits(scenario, data, seed=0)
    b = build_splits(scenario, data, seed=1)  # another run seed: the same test images
    assert a.x_test.shape == (6, 20, 28, 3) and a.y_test.tolist().count(0) == 3
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(a.x_train) + len(a.x_val) == 7  # the other 7 stripes images
    assert a.description["normal"] == f"{root} class 1 (stripes)"
    assert all("/stripes/" in f or "/bars/" in f for f in a.test_files)
    by_index = build_splits({**scenario, "normal_class": 1}, data, seed=0)
    np.testing.assert_array_equal(by_index.x_test, a.x_test)


def test_train_and_test_folders_are_the_split(tmp_path):
    make_class_folders(tmp_path / "set" / "train", n=6)
    make_class_folders(tmp_path / "set" / "test", n=3)
    scenario = {"name": "one_class", "dataset": str(tmp_path / "set"), "normal_class": "bars"}
    splits = build_splits(scenario, _settings(), seed=0)
    assert len(splits.x_train) + len(splits.x_val) == 6 and len(splits.x_test) == 6
    assert splits.y_test.sum() == 3


def test_normal_vs_anomaly_takes_classes_by_name(tmp_path):
    root = make_class_folders(tmp_path / "s", n=10, classes=("bars", "stripes", "other"))
    scenario = {
        "name": "normal_vs_anomaly",
        "normal": {"dataset": str(root), "classes": ["bars", "other"]},
        "anomaly": {"dataset": None, "classes": ["stripes"]},
    }
    splits = build_splits(scenario, _settings(test_fraction=0.2), seed=0)
    assert (
        len(splits.x_train) + len(splits.x_val) == 16
        and splits.y_test.tolist() == [0] * 4 + [1] * 2
    )


def test_contaminated_works_on_a_folder(tmp_path):
    root = make_class_folders(tmp_path / "s", n=40)
    scenario = {
        "name": "contaminated", "dataset": str(root), "normal_class": "bars",
        "anomaly_class": "stripes", "fraction": 0.1,
    }  # fmt: skip
    splits = build_splits(scenario, _settings(test_fraction=0.2), seed=0)
    assert splits.y_test.sum() == 4 and len(splits.x_test) == 32 + 4  # round(0.1 * 32 / 0.9)


@pytest.mark.parametrize(
    "layout, setting, says",
    [
        ("missing", "scenario.dataset", "no such folder"),
        ("empty_class", "scenario.dataset", "holds no images"),
        ("no_classes", "scenario.dataset", "no class folders and no images"),
        ("loose_images", "scenario.dataset", "but no class folders"),
        ("unknown_class", "scenario.normal_class=dogs", "its classes are 0 bars, 1 stripes"),
        ("sizes", "data.image_size", "images differ in size"),
        ("corrupt", "data.on_corrupt=skip", "cannot decode this image"),
    ],
)
def test_bad_input_is_one_clear_line_naming_path_and_setting(tmp_path, layout, setting, says):
    root = tmp_path / "set"
    normal = "bars"
    if layout == "missing":
        root = tmp_path / "nowhere"
    elif layout == "empty_class":
        make_class_folders(root, n=3)
        (root / "zebras").mkdir()
    elif layout == "no_classes":
        root.mkdir()
    elif layout == "loose_images":
        root.mkdir()
        Image.fromarray(_pattern("bars", 8, 8, 0)).save(root / "x.png")
    elif layout == "unknown_class":
        make_class_folders(root, n=3)
        normal = "dogs"
    elif layout == "sizes":
        make_class_folders(root, n=3)
        Image.fromarray(_pattern("bars", 9, 9, 0)).save(root / "bars" / "odd.png")
    elif layout == "corrupt":
        make_class_folders(root, n=3)
        (root / "bars" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    scenario = {"name": "one_class", "dataset": str(root), "normal_class": normal}
    with pytest.raises(DataError) as err:
        build_splits(scenario, _settings(), seed=0)
    message = str(err.value)
    assert says in message and setting in message and "\n" not in message
    if layout in ("empty_class", "sizes", "corrupt"):
        assert str(root) in message


def test_corrupt_files_can_be_skipped_counted_and_listed(tmp_path):
    root = make_class_folders(tmp_path / "set", n=5)
    (root / "bars" / "broken.png").write_bytes(b"\x89PNG not really")
    scenario = {"name": "one_class", "dataset": str(root), "normal_class": "bars"}
    splits = build_splits(scenario, _settings(on_corrupt="skip", test_fraction=0.2), seed=0)
    assert len(splits.skipped_files) == 1 and "broken.png" in splits.skipped_files[0]
    assert len(splits.x_train) + len(splits.x_val) + (splits.y_test == 0).sum() == 5


def test_a_folder_too_large_for_memory_stops_before_decoding(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "set", n=3)
    monkeypatch.setattr(sources, "decode_files", lambda *a, **k: pytest.fail("decoded"))
    scenario = {"name": "one_class", "dataset": str(root), "normal_class": 0}
    data = _settings(image_size=[4000, 4000], max_memory_gb=1)
    # 6 files × 4000·4000·3 values × (1 byte uint8 + 4 bytes float32) = 1.34 GiB
    with pytest.raises(DataError, match=r"its 6 images need about 1\.3 GB") as err:
        build_splits(scenario, data, seed=0)
    assert "data.max_memory_gb=1" in str(err.value) and "data.image_size" in str(err.value)


def test_decoded_folders_are_cached_by_files_and_settings(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "set", n=4)
    scenario = {"name": "one_class", "dataset": str(root), "normal_class": 0}
    data = {"download": False, "decode_cache": True}
    first = build_splits(scenario, data, seed=0, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    sources._load_cached.cache_clear()
    real = sources.decode_files
    monkeypatch.setattr(sources, "decode_files", lambda *a, **k: pytest.fail("decoded again"))
    again = build_splits(scenario, data, seed=0, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.x_test, again.x_test)
    # a changed file (size, mtime) or setting is decoded again
    monkeypatch.setattr(sources, "decode_files", real)
    sources._load_cached.cache_clear()
    Image.fromarray(_pattern("bars", 20, 28, 99)).save(root / "bars" / "000.png")
    build_splits(scenario, data, seed=0, cache_dir=tmp_path / "cache")
    build_splits(scenario, {**data, "channels": 1}, seed=0, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


# ----------------------------------------------------------------------------- normal / abnormal


def _inspection_folders(tmp_path, with_masks=True):
    good, bad, masks = tmp_path / "good", tmp_path / "defect", tmp_path / "ground_truth"
    for folder in (good, bad / "scratch", masks / "scratch"):
        folder.mkdir(parents=True)
    for i in range(10):
        Image.fromarray(_pattern("bars", 16, 24, i)).save(good / f"{i}.png")
    for i in range(3):
        image = _pattern("bars", 16, 24, 50 + i)
        image[4:8, 5:12] = 255
        Image.fromarray(image).save(bad / "scratch" / f"{i:03d}.png")
        if with_masks:
            mask = np.zeros((16, 24), np.uint8)
            mask[4:8, 5:12] = 255
            Image.fromarray(mask).save(masks / "scratch" / f"{i:03d}_mask.png")
    return good, bad, masks


def test_normal_abnormal_folders_with_masks_matched_by_name(tmp_path):
    good, bad, masks = _inspection_folders(tmp_path)
    scenario = {"name": "folders", "normal_dir": str(good), "abnormal_dir": [str(bad)],
                "normal_test_dir": None, "mask_dir": str(masks)}  # fmt: skip
    splits = build_splits(scenario, _settings(test_fraction=0.2), seed=0)
    assert splits.x_test.shape == (5, 16, 24, 3) and splits.y_test.tolist() == [0, 0, 1, 1, 1]
    assert len(splits.x_train) + len(splits.x_val) == 8
    assert splits.test_masks.shape == (5, 16, 24)
    assert not splits.test_masks[:2].any()
    assert splits.test_masks[2:, 4:8, 5:12].all() and splits.test_masks[2:].sum() == 3 * 28
    assert splits.test_files[-1].endswith("scratch/002.png")


def test_a_missing_or_unmatched_mask_is_an_error_naming_the_file(tmp_path):
    good, bad, masks = _inspection_folders(tmp_path)
    scenario = {"name": "folders", "normal_dir": str(good), "abnormal_dir": str(bad),
                "mask_dir": str(masks)}  # fmt: skip
    (masks / "scratch" / "001_mask.png").rename(masks / "scratch" / "x01_mask.png")
    with pytest.raises(DataError) as err:
        build_splits(scenario, _settings(), seed=0)
    assert "no mask for" in str(err.value) and "scratch/001.png" in str(err.value)
    shutil.copy(masks / "scratch" / "x01_mask.png", masks / "scratch" / "001_mask.png")
    with pytest.raises(DataError, match="x01_mask.png matches no abnormal image"):
        build_splits(scenario, _settings(), seed=0)


def test_normal_test_folder_replaces_the_held_out_share(tmp_path):
    good, bad, _ = _inspection_folders(tmp_path, with_masks=False)
    shutil.copytree(good, tmp_path / "good_test")
    scenario = {"name": "folders", "normal_dir": str(good), "abnormal_dir": str(bad),
                "normal_test_dir": str(tmp_path / "good_test")}  # fmt: skip
    splits = build_splits(scenario, _settings(), seed=0)
    assert len(splits.x_train) + len(splits.x_val) == 10 and splits.y_test.tolist().count(0) == 10
    assert splits.test_masks is None


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.fixture
def cifar_slice(tmp_path, data_dir):
    """20 training and 5 test JPEGs per class of the real CIFAR-10 folders, under a data root."""
    for split, n in (("train", 20), ("test", 5)):
        for folder in sorted((data_dir / "cifar10" / split).iterdir()):
            target = tmp_path / "root" / "cifar10" / split / folder.name
            target.mkdir(parents=True)
            for path in sorted(folder.glob("*.jpg"))[:n]:
                shutil.copy(path, target / path.name)
    return tmp_path / "root"


def test_cifar10_is_found_like_mnist_and_read_from_its_jpegs(cifar_slice):
    scenario = {"name": "one_class", "dataset": "cifar10", "normal_class": "cat"}
    splits = build_splits(scenario, _settings(root=str(cifar_slice)), seed=0)
    assert splits.x_train.shape[1:] == (32, 32, 3) and len(splits.x_train) + len(splits.x_val) == 20
    assert len(splits.x_test) == 50 and splits.y_test.sum() == 45
    assert splits.description["normal"] == "cifar10 class 3 (cat)"
    # the same class list and order as the official CIFAR-10 labels
    found = sources.load_dataset("cifar10", "test", settings=DataSettings(root=str(cifar_slice)))
    assert found.classes == sources.CIFAR10_CLASSES


def test_missing_cifar10_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AEAD_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setattr(sources, "candidate_roots", _roots(tmp_path))
    scenario = {"name": "one_class", "dataset": "cifar10", "normal_class": 0}
    with pytest.raises(DataError) as err:
        build_splits(scenario, _settings(root=str(tmp_path / "cfg")), seed=0)
    for place in ("data.root", tmp_path / "cfg", "AEAD_DATA_DIR", tmp_path / "env", "download"):
        assert str(place) in str(err.value)


def _roots(tmp_path):
    from aead.data.lookup import candidate_roots

    def roots(root):
        return [r for r in candidate_roots(root) if r[0] != "Debian datasets"]

    return roots


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """Two classes of 20×28 RGB PNGs (non-square), 30 images each."""
    return make_class_folders(tmp_path_factory.mktemp("colour") / "shapes", n=30)


def _colour_run(make_config, tmp_path, folder, *overrides):
    from aead.pipeline import RunContext, run

    cfg = make_config(
        "scenario=one_class", f"scenario.dataset={folder}", "scenario.normal_class=stripes",
        "trainer.batch_size=8", "tracking.log_model=false", *overrides,
    )  # fmt: skip
    return run(cfg, RunContext(base_dir=str(tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, loss",
    [("conv", "bce"), ("conv", "ssim"), ("deep_conv", "mse"), ("dense", "mae")],
)
def test_every_model_and_loss_trains_and_scores_a_colour_folder(
    make_config, tmp_path, colour_folder, model, loss
):
    from mlflow.tracking import MlflowClient

    from tests.helpers import logged_scores

    result = _colour_run(make_config, tmp_path, colour_folder, f"model={model}", f"loss={loss}")
    client = MlflowClient(result.tracking_uri)
    logged = client.get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.tags["data.image_shape"] == "20×28×3"
    scores = logged_scores(result.tracking_uri, result.run_id)
    assert len(scores) == 12 and scores["file"].str.endswith(".png").all()
    assert np.isfinite(scores["score"]).all() and 0 <= result.metrics["roc_auc"] <= 1
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "plots/reconstructions.png" in artifacts and "plots/outliers.png" in artifacts


@pytest.mark.slow
def test_supervised_cnn_and_every_score_run_on_colour(make_config, tmp_path, colour_folder):
    cnn = _colour_run(
        make_config, tmp_path, colour_folder, "model=cnn", "scenario.train_anomaly_fraction=0.2"
    )
    assert 0 <= cnn.metrics["roc_auc"] <= 1
    for score in ("complexity", "latent_knn", "background"):
        done = _colour_run(make_config, tmp_path, colour_folder, "loss=mse", f"score={score}")
        assert np.isfinite(done.metrics["roc_auc"]), score
    ensemble = _colour_run(
        make_config, tmp_path, colour_folder, "+detector=conv_knn_dense_complexity"
    )
    assert np.isfinite(ensemble.metrics["roc_auc"])


@pytest.mark.slow
def test_colour_detector_scores_as_the_run_did(make_config, tmp_path, colour_folder):
    import mlflow

    from aead.detectors.deploy import InputError
    from tests.helpers import logged_scores

    result = _colour_run(make_config, tmp_path, colour_folder, "tracking.log_model=true")
    logged = logged_scores(result.tracking_uri, result.run_id)
    mlflow.set_tracking_uri(result.tracking_uri)
    detector = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/detector")
    assert detector.metadata.metadata["image_shape"] == [20, 28, 3]
    images = np.stack([np.asarray(Image.open(f)) for f in logged["file"]])  # uint8, as files are
    answer = detector.predict(images)
    np.testing.assert_allclose(answer["score"], logged["score"], rtol=1e-4, atol=1e-6)
    assert answer["is_anomaly"].tolist() == logged["predicted"].astype(bool).tolist()
    with pytest.raises(InputError, match=r"images must be N×20×28×3, got shape \(2, 28, 28\)"):
        detector.predict(np.zeros((2, 28, 28), np.uint8))
    # maps on request: the run's per-pixel error, smoothed by its maps.sigma (1.0)
    from aead.scoring.maps import pixel_maps

    with_maps = detector.predict(images[:3], params={"maps": True})
    keras_model = detector.unwrap_python_model().detector.keras_model()
    x = images[:3].astype(np.float32) / 255
    expected = pixel_maps(x, keras_model.predict(x, verbose=0), "bce", sigma=1.0)
    np.testing.assert_allclose(np.array(with_maps["map"].tolist()), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(with_maps["score"], logged["score"][:3], rtol=1e-4, atol=1e-6)

    # served over REST, as a user deploys it: colour images as nested lists of 0-255 ints
    from tests import servers

    port = servers.free_port()
    command = [
        str(servers.BIN / "mlflow"), "models", "serve", "-m", f"runs:/{result.run_id}/detector",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": result.tracking_uri}
    with servers.serving(command, port, "/ping", tmp_path / "serve.log", env=env) as base:
        answer = servers.http_post(base, "/invocations", {"inputs": images[:4].tolist()})
        mapped = servers.http_post(
            base, "/invocations", {"inputs": images[:2].tolist(), "params": {"maps": True}}
        )
    served = answer["predictions"]
    np.testing.assert_allclose(
        [p["score"] for p in served], logged["score"][:4], rtol=1e-4, atol=1e-6
    )
    assert [p["is_anomaly"] for p in served] == logged["predicted"][:4].astype(bool).tolist()
    served_maps = np.array([p["map"] for p in mapped["predictions"]])
    np.testing.assert_allclose(served_maps, expected[:2], rtol=1e-4, atol=1e-6)
