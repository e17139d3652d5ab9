"""The detector contract (aead.detectors) and the field's baselines behind it: PyOD's kNN,
PCA, Isolation Forest, OC-SVM and ECOD (on pixels and on an autoencoder's codes), Deep SVDD
and transformation prediction; each on a one-class slice of real MNIST, each as an ensemble
member, each pickled whole (what the deployable detector carries)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from aead.detectors import DETECTORS, Training, TrainingData, build_detector
from aead.detectors.deep_svdd import build_deep_svdd_network, center_of, with_center
from aead.detectors.models import model_settings
from aead.detectors.rotation import transform, transformations
from aead.errors import ConfigError
from aead.pipeline import RunContext, run
from aead.store.model_store import ModelStore
from tests.helpers import logged_scores

ONE_CLASS = ["scenario=one_class", "scenario.normal_class=0", "threshold=percentile"]


def test_every_kind_is_registered_and_every_model_config_names_one():
    assert {"autoencoder", "classifier", "pyod", "deep_svdd", "transformations"} <= set(DETECTORS)
    for name in ("conv", "dense", "deep_conv", "cnn", "knn", "pca", "iforest", "ocsvm", "ecod",
                 "deep_svdd", "rotation"):  # fmt: skip
        settings = model_settings(name)
        assert type(build_detector(settings)).kind == settings["kind"], name


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"name": "x", "kind": "nope"}, "unknown model.kind 'nope'"),
        ({"name": "x", "kind": "pyod", "algorithm": "lof"}, "unknown model.algorithm 'lof'"),
        ({"name": "x", "kind": "pyod", "params": {"n_neigh": 3}}, "model.params of knn"),
        ({"name": "x", "kind": "pyod", "features": "codes"}, "needs model.autoencoder.model"),
        ({"name": "x", "kind": "pyod", "features": "edges"}, "model.features=edges"),
        ({"name": "x", "kind": "deep_svdd", "units": [3]}, "has no setting ['units']"),
        ({"name": "x", "kind": "transformations", "rotations": False}, "at least two"),
    ],
)
def test_bad_detector_settings_fail_before_any_work(settings, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        build_detector(settings)


def test_transformations_are_rotations_flips_and_shifts_identity_first():
    assert transformations({}) == [(False, 0, 0, k) for k in range(4)]
    assert len(transformations({"flips": True})) == 8
    geom = transformations({"flips": True, "shift": 8})
    assert len(geom) == 72 and geom[0] == (False, 0, 0, 0) and len(set(geom)) == 72
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(transform(image, False, 0, 0, 0), image)
    # a quarter turn counter-clockwise: the top row becomes the left column, reversed
    np.testing.assert_array_equal(transform(image, False, 0, 0, 1)[0, :, 0, 0], [3, 2, 1, 0])
    np.testing.assert_array_equal(transform(image, True, 0, 0, 0)[0, 0, :, 0], [3, 2, 1, 0])
    # shifted down by one with the border reflected: row 0 is the old row 1
    shifted = transform(image, False, 1, 0, 0)[0, :, :, 0]
    np.testing.assert_array_equal(shifted[1:], image[0, :3, :, 0])
    np.testing.assert_array_equal(shifted[0], image[0, 1, :, 0])


def test_deep_svdd_centre_keeps_away_from_zero_and_is_part_of_the_model():
    rng = np.random.default_rng(0)
    images = rng.random((64, 28, 28, 1), dtype=np.float32)
    network = build_deep_svdd_network({"filters": [4, 2], "rep_dim": 6}, (28, 28, 1))
    assert not any(getattr(layer, "use_bias", False) for layer in network.layers)
    c = center_of(network, images, 32, eps=0.1)
    features = network.predict(images, verbose=0)
    expected = features.mean(axis=0)
    near = np.abs(expected) < 0.1
    np.testing.assert_allclose(c[~near], expected[~near], rtol=1e-5)
    np.testing.assert_array_equal(np.abs(c[near]), np.full(near.sum(), 0.1, np.float32))
    model = with_center(network, c)
    np.testing.assert_allclose(model.predict(images, verbose=0), features - c, atol=1e-5)


def _fitted(settings: dict, data: TrainingData, seed: int = 0):
    detector = build_detector(settings)
    trainer = {"epochs": 1, "batch_size": 64, "learning_rate": 0.001, "patience": 0, "verbose": 0}
    detector.fit(data, Training(trainer, seed, ModelStore(None)))
    return detector


def test_pyod_knn_on_pixels_is_the_mean_distance_to_the_nearest_training_images():
    train = np.zeros((5, 4, 4, 1), np.float32)
    train[:, 0, 0, 0] = [0.0, 0.1, 0.2, 0.3, 0.9]
    settings = {"name": "knn", "kind": "pyod", "algorithm": "knn",
                "params": {"n_neighbors": 2, "method": "mean"}}  # fmt: skip
    detector = _fitted(settings, TrainingData(train, train[:2]))
    query = np.zeros((2, 4, 4, 1), np.float32)
    query[:, 0, 0, 0] = [0.15, 0.6]
    # 0.15: nearest 0.1 and 0.2 -> 0.05; 0.6: nearest 0.9 and 0.3 -> 0.3
    np.testing.assert_allclose(detector.errors(query).errors, [0.05, 0.3], atol=1e-6)
    assert detector.obtained_.source == "trained" and detector.maps(query) is None
    # a test image that is a training image (scenario=contaminated) is not its own neighbour
    # (scored as new images, each is at distance 0 from itself: (0 + nearest other) / 2)
    np.testing.assert_allclose(detector.errors(train).errors, [0.05] * 4 + [0.3], atol=1e-6)
    as_training = detector.errors(train, train_index=np.arange(5)).errors
    np.testing.assert_allclose(as_training, [0.15, 0.1, 0.1, 0.15, 0.65], atol=1e-6)


@pytest.fixture(scope="module")
def mnist_slice():
    """Normal 0s for training, a test set of 0s and other digits, from the real MNIST."""
    from aead.data import load_dataset

    mnist = load_dataset("mnist", "train", download=False)
    zeros, others = np.flatnonzero(mnist.labels == 0), np.flatnonzero(mnist.labels != 0)
    data = TrainingData(mnist.unit(zeros[:500]), mnist.unit(zeros[500:600]))
    test = np.concatenate([mnist.unit(zeros[600:700]), mnist.unit(others[:100])])
    return data, test, np.r_[np.zeros(100), np.ones(100)]


@pytest.mark.parametrize(
    "name, floor",
    [
        ("knn", 0.95),
        ("pca", 0.9),
        ("iforest", 0.8),
        ("ocsvm", 0.9),
        ("ecod", 0.7),
        ("deep_svdd", 0.8),
        ("rotation", 0.6),
    ],  # fmt: skip
)
def test_each_detector_separates_zeros_from_other_digits_and_pickles_whole(
    name, floor, mnist_slice
):
    from sklearn.metrics import roc_auc_score

    data, test, labels = mnist_slice
    detector = _fitted(model_settings(name), data)
    scores = detector.errors(test).errors
    assert scores.shape == (200,) and np.isfinite(scores).all()
    assert roc_auc_score(labels, scores) >= floor, name
    copy = pickle.loads(pickle.dumps(detector))
    np.testing.assert_allclose(copy.errors(test).errors, scores, rtol=1e-5, atol=1e-7)
    assert copy.normal_train_images_ is None  # the state, not the data it learned from


def test_a_detector_trained_again_from_its_seed_is_the_same(mnist_slice):
    data, test, _ = mnist_slice
    first = _fitted(model_settings("deep_svdd"), data, seed=3).errors(test).errors
    again = _fitted(model_settings("deep_svdd"), data, seed=3).errors(test).errors
    np.testing.assert_array_equal(first, again)


@pytest.mark.slow
def test_pyod_on_an_autoencoders_codes_reuses_that_autoencoder(make_config, tmp_path):
    import mlflow

    context = RunContext(base_dir=str(tmp_path))
    conv = run(make_config(*ONE_CLASS, "model=conv", "loss=mse"), context)
    knn = run(make_config(*ONE_CLASS, "model=knn", "model.features=codes"), context)
    tags = mlflow.MlflowClient(knn.tracking_uri).get_run(knn.run_id).data.tags
    assert knn.model_source == "trained"  # the kNN index on the codes of ...
    assert tags["aead.autoencoder_source"] == "reused"  # ... the conv AE the first run trained
    assert tags["aead.autoencoder_trained_by_run"] == conv.run_id
    assert 0.5 < knn.metrics["roc_auc"] <= 1


@pytest.mark.slow
def test_every_new_detector_runs_as_a_logged_run_and_as_an_ensemble_member(make_config, tmp_path):
    context = RunContext(base_dir=str(tmp_path))
    for name in ("knn", "pca", "iforest", "ocsvm", "ecod", "deep_svdd", "rotation"):
        result = run(make_config(*ONE_CLASS, f"model={name}", "tracking.log_model=false"), context)
        scores = logged_scores(result.tracking_uri, result.run_id)
        assert len(scores) == 200 and result.metrics["roc_auc"] > 0.5, name
        assert f"{name}-one_class" in _run_name(result)  # no loss in the name: none applies
    members = (
        "score.members=[{name:latent_knn,k:5},{name:companion,model:knn},"
        "{name:companion,model:rotation}]"
    )
    ensemble = run(make_config(*ONE_CLASS, "model=conv", "loss=mse", "score=ensemble", members),
                   context)  # fmt: skip
    assert ensemble.metrics["roc_auc"] > 0.5
    # the rotation companion is the model its own run above trained: reused, not retrained
    import mlflow

    tags = mlflow.MlflowClient(ensemble.tracking_uri).get_run(ensemble.run_id).data.tags
    assert tags["aead.companion.rotation_source"] == "reused"


def _run_name(result) -> str:
    import mlflow

    return (
        mlflow.MlflowClient(result.tracking_uri).get_run(result.run_id).data.tags["mlflow.runName"]
    )


@pytest.mark.parametrize("model_name, loss", [("conv", "bce"), ("cnn", None)])
def test_uint8_images_train_and_predict_as_their_float_versions_bit_for_bit(model_name, loss):
    """Splits keep images as uint8 and models convert each batch: the weights, history and
    predictions are those of training on the images divided by 255 up front."""
    from aead.data import load_dataset, to_unit
    from aead.detectors.models import predict
    from aead.detectors.training import train_autoencoder, train_classifier

    mnist = load_dataset("mnist", "train", download=False)
    images, labels = mnist.images[:256], (mnist.labels[:256] == 0).astype(np.int64)
    trainer = {"epochs": 2, "batch_size": 64, "learning_rate": 1e-3, "patience": 0}

    def train(x):
        if loss is not None:
            return train_autoencoder(model_settings(model_name), loss, trainer, x, x[:64], seed=3)
        return train_classifier(
            model_settings(model_name), trainer, x[64:], labels[64:], x[:64], labels[:64], seed=3
        )

    assert images.dtype == np.uint8
    (on_uint8, history_uint8), (on_float, history_float) = train(images), train(to_unit(images))
    assert history_uint8 == history_float
    for a, b in zip(on_uint8.get_weights(), on_float.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(predict(on_uint8, images), predict(on_float, to_unit(images)))


def test_batches_are_converted_in_the_graph_to_numpys_bits_for_every_uint8_value():
    """Inside a traced function, where a division by a constant 255 would be rewritten into a
    multiplication that differs in the last bit for some values."""
    import tensorflow as tf

    from aead.data import to_unit
    from aead.detectors.models import unit_tensor

    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    in_graph = tf.function(unit_tensor)(tf.constant(values)).numpy()
    assert in_graph.dtype == np.float32
    np.testing.assert_array_equal(in_graph, to_unit(values))
    naive = tf.function(lambda x: tf.cast(x, tf.float32) / 255.0)(tf.constant(values)).numpy()
    assert not np.array_equal(naive, to_unit(values))  # what the test guards against
    floats = to_unit(values)
    np.testing.assert_array_equal(unit_tensor(floats).numpy(), floats)  # floats pass through
