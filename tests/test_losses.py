import math

import numpy as np
import pytest

from aead.detectors.losses import LOSSES, get_loss, score_images

rng = np.random.default_rng(0)
IMAGES = rng.uniform(0, 1, size=(5, 28, 28, 1)).astype(np.float32)


@pytest.mark.parametrize("name", ["mse", "mae", "ssim"])
def test_perfect_reconstruction_scores_zero(name):
    np.testing.assert_allclose(score_images(IMAGES, IMAGES, name), 0.0, atol=1e-6)


def _constant(value, n=1):
    return np.full((n, 28, 28, 1), value, dtype=np.float32)


def test_mse_and_mae_hand_computed():
    assert score_images(_constant(0.0), _constant(0.5), "mse")[0] == pytest.approx(0.25)
    assert score_images(_constant(0.2), _constant(0.5), "mae")[0] == pytest.approx(0.3)


def test_bce_hand_computed():
    # -(1 * ln 0.5) per pixel
    assert score_images(_constant(1.0), _constant(0.5), "bce")[0] == pytest.approx(math.log(2))


def test_ssim_hand_computed():
    # constant images: only the luminance term remains, (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    expected = 1 - (2 * a * b + c1) / (a * a + b * b + c1)
    # (TF's float32 Gaussian window sums to 1 only to ~1e-6, which moves the result ~1e-4)
    assert score_images(_constant(a), _constant(b), "ssim")[0] == pytest.approx(expected, abs=3e-4)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_scores_grow_with_corruption(name):
    clean = IMAGES
    slightly = np.clip(clean + 0.05, 0, 1)
    badly = 1 - clean
    s = [score_images(clean, x, name).mean() for x in (slightly, badly)]
    assert s[0] < s[1]


def test_training_loss_is_the_score():
    import tensorflow as tf

    recon = np.clip(IMAGES + 0.1, 0, 1)
    per_image = get_loss("mse")(tf.constant(IMAGES), tf.constant(recon)).numpy()
    np.testing.assert_allclose(per_image, score_images(IMAGES, recon, "mse"), rtol=1e-6)
    assert per_image.shape == (5,)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        get_loss("huber")
