"""The `score` group: each score on hand-checkable cases, then a one-epoch run per score that
logs every metric and artifact."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from aead.pipeline import RunContext, run
from aead.scoring.scores import (
    SCORES,
    Companion,
    FitContext,
    Scored,
    build_score,
    complexity_bits,
    perturb_pixels,
)
from tests.helpers import CONF, logged_image, logged_scores


def _textured(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 28, 28, 1)).astype(np.float32)


def test_every_config_option_is_registered():
    names = sorted(p.stem for p in (CONF / "score").glob("*"))
    assert names == sorted(SCORES)
    assert names == [
        "background",
        "companion",
        "complexity",
        "ensemble",
        "latent_knn",
        "map",
        "raw",
    ]


def test_raw_is_the_error_itself():
    errors = np.array([0.3, 0.1, 0.2])
    scored = Scored(np.zeros((3, 28, 28, 1), np.float32), errors)
    np.testing.assert_array_equal(build_score({"name": "raw"})(scored), errors)


def test_complexity_orders_a_blank_and_a_textured_image_with_equal_error():
    blank = np.zeros((1, 28, 28, 1), np.float32)
    images = np.concatenate([blank, _textured()])
    bits = complexity_bits(images, "png")
    assert bits[0] < 1.0 < 6.0 < bits[1]  # a blank image compresses to almost nothing
    same_error = Scored(images, np.array([0.05, 0.05]))
    for combine in ("ratio", "difference"):
        scores = build_score({"name": "complexity", "combine": combine})(same_error)
        # the same error is more surprising on the simple image
        assert scores[0] > scores[1], combine
    ratio = build_score({"name": "complexity", "combine": "ratio", "compressor": "zlib"})
    zlib_bits = complexity_bits(images, "zlib")
    np.testing.assert_allclose(ratio(same_error), 0.05 / zlib_bits)


def test_background_equal_to_the_model_gives_a_constant_ratio():
    images = np.concatenate([_textured(s) for s in range(5)])
    errors = np.linspace(0.01, 0.5, 5)
    perturbed_seen = []

    def backgrounds(perturb):
        perturbed_seen.append(perturb(images))
        return lambda x: errors  # the background model *is* the model

    score = build_score({"name": "background", "combine": "ratio", "perturbation": 0.3})
    score.fit(Scored(images, errors), FitContext(backgrounds=backgrounds))
    np.testing.assert_allclose(score(Scored(images, errors)), np.ones(5))
    changed = (perturbed_seen[0] != images).mean()
    assert 0.2 < changed < 0.4  # about the configured share of pixels replaced
    difference = build_score({"name": "background"})
    difference.fit(Scored(images, errors), FitContext(backgrounds=backgrounds))
    np.testing.assert_allclose(difference(Scored(images, errors)), np.zeros(5))


def test_latent_knn_is_the_mean_distance_to_the_nearest_training_codes():
    train = np.zeros((4, 28, 28, 1), np.float32)
    train[:, 0, 0, 0] = [0.0, 1.0, 2.0, 10.0]  # the "encoder" below reads this pixel as code

    def encoder(images):
        return np.stack([images[:, 0, 0, 0], np.zeros(len(images))], axis=1)

    score = build_score({"name": "latent_knn", "k": 2, "normalize": "none"})
    score.fit(Scored(train[:1], np.zeros(1)), FitContext(train_images=train, encoder=encoder))
    query = np.zeros((2, 28, 28, 1), np.float32)
    query[:, 0, 0, 0] = [1.0, 6.0]
    # 1.0: nearest codes 1 and 0 (or 2) -> (0 + 1) / 2; 6.0: nearest 10 and 2 -> (4 + 4) / 2
    np.testing.assert_allclose(score(Scored(query, np.zeros(2))), [0.5, 4.0])
    with pytest.raises(ValueError, match="needs an autoencoder"):
        build_score({"name": "latent_knn"}).fit(Scored(train, np.zeros(4)), FitContext())
    # l2: codes scaled to unit length, so only their direction counts
    unit = build_score({"name": "latent_knn", "k": 1, "normalize": "l2"})
    unit.fit(Scored(train[:1], np.zeros(1)), FitContext(train_images=train[1:2], encoder=encoder))
    np.testing.assert_allclose(unit(Scored(query, np.zeros(2))), [0.0, 0.0], atol=1e-12)


def test_latent_knn_does_not_count_a_training_image_as_its_own_neighbour():
    train = np.zeros((4, 28, 28, 1), np.float32)
    train[:, 0, 0, 0] = [0.0, 1.0, 2.0, 10.0]

    def encoder(images):
        return np.stack([images[:, 0, 0, 0], np.zeros(len(images))], axis=1)

    score = build_score({"name": "latent_knn", "k": 2, "normalize": "none"})
    score.fit(Scored(train[:1], np.zeros(1)), FitContext(train_images=train, encoder=encoder))
    # training images 1 (code 1) and 3 (code 10) scored as test images, and a new image that
    # happens to equal training image 0: only the training images leave themselves out
    query = np.concatenate([train[1:2], train[3:4], train[0:1]])
    as_test = score(Scored(query, np.zeros(3), train_index=np.array([1, 3, -1])))
    # code 1: nearest others 0 and 2 -> (1 + 1) / 2; code 10: 2 and 1 -> (8 + 9) / 2; the new
    # image at 0: itself-like 0 and 1 -> (0 + 1) / 2
    np.testing.assert_allclose(as_test, [1.0, 8.5, 0.5])
    # without the index, training images match themselves at distance 0: (0 + 1) / 2, (0 + 8) / 2
    np.testing.assert_allclose(score(Scored(query, np.zeros(3))), [0.5, 4.0, 0.5])


class _StagedEncoder:
    """A fake encoder with two stages: stage 1 reads pixel (0, 0), the bottleneck pixel (0, 1)."""

    def __call__(self, images):
        return self.stages(images)[-1]

    def stages(self, images):
        return [images[:, 0, 0, :], images[:, 0, 1, :]]


def test_latent_knn_at_every_stage_averages_validation_standardized_distances():
    rng = np.random.default_rng(0)
    train, validation, query = (rng.random((n, 28, 28, 1)).astype(np.float32) for n in (50, 30, 7))
    validation[:, 0, 0, 0] *= 10  # stage 1's distances on a larger scale than the bottleneck's
    query[:, 0, 0, 0] *= 10
    context = FitContext(train_images=train, encoder=_StagedEncoder())
    staged = build_score({"name": "latent_knn", "k": 3, "normalize": "none", "stages": "all"})
    staged.fit(Scored(validation, np.zeros(30)), context)

    def distances(stage, images):  # each stage on its own, as the bottleneck-only score
        one = build_score({"name": "latent_knn", "k": 3, "normalize": "none"})
        one.fit(Scored(train, np.zeros(50)), FitContext(train_images=train, encoder=stage))
        return one(Scored(images, np.zeros(len(images))))

    expected = 0
    for stage in (lambda x: x[:, 0, 0, :], lambda x: x[:, 0, 1, :]):
        reference = distances(stage, validation)
        expected += (distances(stage, query) - reference.mean()) / reference.std() / 2
    np.testing.assert_allclose(staged(Scored(query, np.zeros(7))), expected)
    # the bottleneck setting reads the last stage only
    bottleneck = build_score({"name": "latent_knn", "k": 3, "normalize": "none"})
    bottleneck.fit(Scored(validation, np.zeros(30)), context)
    np.testing.assert_allclose(
        bottleneck(Scored(query, np.zeros(7))), distances(lambda x: x[:, 0, 1, :], query)
    )
    with pytest.raises(ValueError, match="needs an autoencoder's encoder stages"):
        staged.fit(Scored(validation, np.zeros(30)), FitContext(train_images=train, encoder=len))


@pytest.mark.parametrize(
    "model, stage_shapes",
    [
        ({"name": "dense", "units": [200, 100, 50, 25]}, [200, 100, 50, 25]),
        ({"name": "conv", "filters": [16, 8, 8]}, [14 * 14 * 16, 7 * 7 * 8, 4 * 4 * 8]),
    ],
)
def test_encoder_stages_end_at_the_bottleneck(model, stage_shapes):
    from aead.detectors.models import Encoder, build_model

    encoder = Encoder(build_model(model), batch_size=8)
    images = np.concatenate([_textured(0), _textured(1)])
    stages = encoder.stages(images)
    assert [s.shape for s in stages] == [(2, n) for n in stage_shapes]
    np.testing.assert_allclose(stages[-1], encoder(images), rtol=1e-6)


@pytest.mark.parametrize(
    "model, code_shape",
    [
        ({"name": "dense", "units": [200, 100, 50, 25]}, (25,)),
        ({"name": "conv", "filters": [16, 8, 8]}, (4, 4, 8)),
        ({"name": "deep_conv", "architecture": "conv", "filters": [32, 64, 64, 64]}, (2, 2, 64)),
    ],
)
def test_encoder_ends_at_the_bottleneck(model, code_shape):
    from aead.detectors.models import build_model, encoder_of

    encoder = encoder_of(build_model(model))
    assert tuple(encoder.output.shape[1:]) == code_shape
    assert encoder.predict(_textured(), verbose=0).shape == (1, *code_shape)


def test_ensemble_is_the_mean_of_validation_standardized_members():
    images = np.concatenate([_textured(s) for s in range(4)])
    validation = Scored(images, np.array([1.0, 2.0, 3.0, 4.0]))  # raw: mean 2.5, std 1.118
    score = build_score({"name": "ensemble", "members": [{"name": "raw"}, {"name": "raw"}]})
    score.fit(validation)
    test = Scored(images[:2], np.array([2.5, 2.5 + 2 * np.std([1, 2, 3, 4])]))
    np.testing.assert_allclose(score(test), [0.0, 2.0])  # z of each member, averaged
    # members on different scales weigh alike: a member scaled by 1000 changes nothing
    scaled = build_score(
        {
            "name": "ensemble",
            "members": [{"name": "raw"}, {"name": "complexity", "combine": "ratio"}],
        }
    )
    scaled.fit(validation)
    z = scaled(test)
    validation_1000 = Scored(images, validation.errors * 1000)
    scaled.fit(validation_1000)
    np.testing.assert_allclose(scaled(Scored(test.images, test.errors * 1000)), z)
    with pytest.raises(ValueError, match="score.members"):
        build_score({"name": "ensemble", "members": []})


def test_companion_scores_the_other_models_errors_and_codes():
    images = np.concatenate([_textured(s) for s in range(6)])
    asked = []

    def companions(model, loss):
        asked.append((model, loss))
        return Companion(
            errors=lambda x, train_index=None: x.reshape(len(x), -1).mean(axis=1) * 10,
            encoder=lambda x: x.reshape(len(x), -1)[:, :2],
        )

    context = FitContext(train_images=images, companions=companions)
    raw = build_score({"name": "companion", "model": "dense", "loss": "mse"})
    raw.fit(Scored(images, np.zeros(6)), context)
    own_errors = np.full(6, 99.0)  # the run's own model's errors play no part
    expected = images.reshape(6, -1).mean(axis=1) * 10
    np.testing.assert_allclose(raw(Scored(images, own_errors)), expected, rtol=1e-6)
    assert asked == [("dense", "mse")]
    # an inner score that needs codes gets the companion's encoder
    knn = build_score(
        {"name": "companion", "model": "dense", "loss": "mse",
         "score": {"name": "latent_knn", "k": 1, "normalize": "none"}}
    )  # fmt: skip
    knn.fit(Scored(images, np.zeros(6)), context)
    np.testing.assert_allclose(knn(Scored(images, own_errors)), np.zeros(6), atol=1e-12)
    with pytest.raises(ValueError, match="needs score.model"):
        build_score({"name": "companion", "loss": "mse"})
    with pytest.raises(ValueError, match="needs a run that learns from normal images"):
        raw.fit(Scored(images, np.zeros(6)), FitContext(train_images=images))


def test_perturbation_is_seeded_and_in_range():
    images = _textured()
    a, b = perturb_pixels(images, 0.2, seed=1), perturb_pixels(images, 0.2, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="score.perturbation"):
        perturb_pixels(images, 1.5, seed=1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"name": "nope"}, "unknown score 'nope'"),
        ({"name": "complexity", "compresor": "png"}, "has no setting ['compresor']"),
        ({"name": "complexity", "compressor": "gif"}, "unknown score.compressor 'gif'"),
        ({"name": "complexity", "combine": "sum"}, "unknown score.combine 'sum'"),
        ({"name": "latent_knn", "normalize": "l1"}, "unknown score.normalize 'l1'"),
        ({"name": "latent_knn", "stages": "first"}, "unknown score.stages 'first'"),
    ],
)
def test_bad_score_settings_say_what_is_accepted(settings, message):
    with pytest.raises(ValueError) as err:
        build_score(settings)(Scored(_textured(), np.array([0.1])))
    assert message in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "score", ["raw", "complexity", "background", "latent_knn", "ensemble", "companion"]
)
def test_one_epoch_run_per_score_logs_everything(make_config, tmp_path, score):
    cfg = make_config("model=dense", "loss=mse", f"score={score}", "tracking.log_model=false")
    result = run(cfg, RunContext(base_dir=str(tmp_path)))
    client = MlflowClient(result.tracking_uri)
    logged = client.get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["score.name"] == score
    expected = {"roc_auc", "average_precision", "accuracy", "f1", "threshold_upper", "val_loss"}
    assert expected <= set(logged.data.metrics)
    # the metrics are those of the logged per-image scores of this score
    scores = logged_scores(result.tracking_uri, result.run_id)
    assert len(scores) == 400 and scores["score"].notna().all()
    assert logged.data.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(scores["label"], scores["score"])
    )
    flagged = (scores["score"] > logged.data.metrics["threshold_upper"]) | (
        scores["score"] < logged.data.metrics["threshold_lower"]
    )
    assert (scores["predicted"] == flagged).all()
    for plot in ("plots/error_histogram.png", "plots/roc_curve.png"):
        logged_image(result.tracking_uri, result.run_id, plot)
    if score == "background":
        assert logged.data.tags["aead.background_source"] == "trained"
        # the same run again reuses both the model and the background model
        again = run(cfg, RunContext(base_dir=str(tmp_path)))
        tags = client.get_run(again.run_id).data.tags
        assert tags["aead.model_source"] == tags["aead.background_source"] == "reused"
        assert again.metrics["roc_auc"] == result.metrics["roc_auc"]
    if score == "companion":  # dense + mse: the run's own model serves as its companion
        assert logged.data.tags["aead.companion.dense_mse_source"] == "reused"


def test_max_z_flags_simple_anomalies_and_large_errors_alike():
    rng = np.random.default_rng(0)
    textured = rng.random((30, 28, 28, 1)).astype(np.float32)
    validation = Scored(textured[:20], rng.uniform(0.04, 0.06, 20))
    score = build_score({"name": "complexity", "combine": "max_z", "compressor": "zlib"})
    score.fit(validation)
    blank = np.zeros((1, 28, 28, 1), np.float32)
    images = np.concatenate([textured[20:21], blank, textured[21:22]])
    normal, simple_anomaly, bad_reconstruction = score(Scored(images, np.array([0.05, 0.05, 0.5])))
    assert simple_anomaly > normal + 3 and bad_reconstruction > normal + 3
    assert abs(normal) < 3  # an image like the validation ones stays within the normal range
