"""Keras model builders, chosen by `model.name`; every size comes from the model config."""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import keras
import numpy as np
from keras import layers

from aead.errors import ConfigError
from aead.tracking import lifecycle

IMAGE_SHAPE = (28, 28, 1)  # MNIST's, the shape a model is built for when none is given


def _input_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in (shape or IMAGE_SHAPE))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"a model takes images height×width×channels, got shape {shape}")
    return shape


def _refuse_smaller_than(shape, side: int, what: str) -> None:
    if min(shape[:2]) < side:
        raise ConfigError(
            f"{what} needs images of at least {side}×{side} pixels, got "
            f"{shape[0]}×{shape[1]}; set data.image_size or use fewer model.filters"
        )


def build_dense(cfg: Mapping, shape=None) -> keras.Model:
    """Dense AE: encoder H·W·C -> units..., mirrored decoder, sigmoid output."""
    shape = _input_shape(shape)
    units = list(cfg["units"])
    inputs = keras.Input(shape, name="image")
    x = layers.Flatten()(inputs)
    for n in units:
        x = layers.Dense(n, activation="relu")(x)
    for n in reversed(units[:-1]):
        x = layers.Dense(n, activation="relu")(x)
    x = layers.Dense(int(np.prod(shape)), activation="sigmoid")(x)
    outputs = layers.Reshape(shape, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="dense_autoencoder")


def build_conv(cfg: Mapping, shape=None) -> keras.Model:
    """Conv AE: one 3x3 ReLU conv + 2x2 max-pool per entry of `filters` (28 -> 14 -> 7 -> 4
    for three), then the mirror: conv + 2x up-sampling per stage, sigmoid output with the
    input's channels. The code is the last stage's map: filters[-1] channels at 1/2^stages of
    the input's height and width.

    As in the classic Keras conv AE, a decoder conv uses 'valid' padding where losing its two
    border pixels lands the up-sampled map exactly on the encoder's size (16 -> 14 -> 28), in
    height and width alike; any excess is cropped off at the end."""
    shape = _input_shape(shape)
    filters = list(cfg["filters"])
    _refuse_smaller_than(shape, 2 ** len(filters), f"a conv AE of {len(filters)} stages")
    init = cfg.get("kernel_initializer", "glorot_uniform")

    def conv(x, n, padding="same"):
        return layers.Conv2D(n, 3, activation="relu", padding=padding, kernel_initializer=init)(x)

    inputs = keras.Input(shape, name="image")
    x, sizes = inputs, []
    for n in filters:
        sizes.append(tuple(x.shape[1:3]))
        x = layers.MaxPooling2D(2, padding="same")(conv(x, n))
    for n, target in zip(reversed(filters), reversed(sizes), strict=True):
        lands = [2 * (have - 2) == want for have, want in zip(x.shape[1:3], target, strict=True)]
        x = layers.UpSampling2D(2)(conv(x, n, "valid" if all(lands) else "same"))
    excess = [have - want for have, want in zip(x.shape[1:3], shape[:2], strict=True)]
    if any(excess):  # sizes the rule above cannot land exactly
        x = layers.Cropping2D(tuple((e // 2, e - e // 2) for e in excess))(x)
    outputs = layers.Conv2D(
        shape[2], 3, activation="sigmoid", padding="same", name="reconstruction"
    )(x)
    return keras.Model(inputs, outputs, name=f"conv_autoencoder_{len(filters)}_stages")


def build_cnn(cfg: Mapping, shape=None) -> keras.Model:
    """Supervised baseline: conv + max-pool blocks, dense + dropout, sigmoid P(anomaly)."""
    shape = _input_shape(shape)
    _refuse_smaller_than(shape, 2 ** len(cfg["filters"]), f"a CNN of {len(cfg['filters'])} blocks")
    inputs = keras.Input(shape, name="image")
    x = inputs
    for n in cfg["filters"]:
        x = layers.Conv2D(n, 3, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(int(cfg["dense_units"]), activation="relu")(x)
    x = layers.Dropout(float(cfg["dropout"]))(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_anomaly")(x)
    return keras.Model(inputs, outputs, name="cnn_classifier")


BUILDERS = {"dense": build_dense, "conv": build_conv, "cnn": build_cnn}


def build_model(cfg: Mapping, shape=None) -> keras.Model:
    """Build the model named by `cfg.architecture` (several configs may share a builder) for
    images of `shape` (height, width, channels; default 28×28×1)."""
    architecture = cfg.get("architecture", cfg["name"])
    if architecture not in BUILDERS:
        raise ConfigError(
            f"unknown model architecture '{architecture}'; choose one of {sorted(BUILDERS)}"
        )
    return BUILDERS[architecture](cfg, shape)


def model_settings(name: str) -> dict:
    """The settings of conf/model/<name>.yaml, for code that builds models outside Hydra
    (the study scripts): one definition of each model."""
    from importlib import resources

    from omegaconf import OmegaConf

    path = resources.files("aead.conf").joinpath("model", f"{name}.yaml")
    if not path.is_file():
        raise ValueError(f"no model config conf/model/{name}.yaml")
    return OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=True)


def encoder_of(autoencoder: keras.Model) -> keras.Model:
    """The autoencoder's encoder: its input up to the bottleneck, the layer with the fewest
    output values (the first such layer, i.e. the encoder's side of it)."""

    def size(layer) -> int:
        shape = layer.output.shape[1:]
        return int(np.prod(shape)) if all(d is not None for d in shape) else 1 << 62

    layers_ = [
        layer for layer in autoencoder.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    bottleneck = min(layers_, key=size)  # min() keeps the first of equal sizes
    return keras.Model(autoencoder.inputs, bottleneck.output, name="encoder")


def unit_tensor(x):
    """A batch as float32 in [0, 1]: uint8 images divided by 255, float images as they are.

    The same bits as NumPy's `x / 255` (aead.data.to_unit), so that uint8 and float images
    train the same model: TensorFlow's graph optimizer rewrites a division by a constant
    into a multiplication by its rounded reciprocal, which differs in the last bit for some
    values, so the divisor is a PlaceholderWithDefault, which it cannot fold. (XLA would
    rewrite it too; Keras compiles without XLA under the op determinism aead enables.)"""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if x.dtype != tf.uint8:
        return x
    divisor = tf.raw_ops.PlaceholderWithDefault(input=tf.constant(255.0), shape=[])
    return tf.cast(x, tf.float32) / divisor


class OnUnitImages(keras.Model):
    """A model fed uint8 images (as aead keeps them) that converts each batch to float in
    [0, 1] before the wrapped model sees it. With `reconstructs`, it is an autoencoder fit
    without targets (y=None): the target is the converted input, so a batch is converted
    once and no second array is sliced. It has no weights of its own: training it trains the
    wrapped model, which is what is kept."""

    def __init__(self, inner: keras.Model, reconstructs: bool = False):
        super().__init__(name=inner.name)
        self.inner, self.reconstructs = inner, reconstructs

    def call(self, x, training=False):
        return self.inner(unit_tensor(x), training=training)

    def _converted(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = unit_tensor(x)
        return keras.utils.pack_x_y_sample_weight(x, x if self.reconstructs else y, sample_weight)

    def train_step(self, data):
        return super().train_step(self._converted(data))

    def test_step(self, data):
        return super().test_step(self._converted(data))


_predictors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _on_unit(model: keras.Model) -> keras.Model:
    """The model's uint8-fed twin for prediction, made once per model."""
    if model not in _predictors:
        _predictors[model] = OnUnitImages(model)
    return _predictors[model]


def predict(model: keras.Model, images, batch_size: int | None = None):
    """model.predict, in a section a signal does not cut in half: an exception raised between
    two of TensorFlow's native calls corrupts its runtime (see lifecycle.critical). uint8
    images are converted to float a batch at a time."""
    if getattr(images, "dtype", None) == np.uint8:
        model = _on_unit(model)
    with lifecycle.critical():
        return model.predict(images, batch_size=batch_size, verbose=0)


def encoder_stages(autoencoder: keras.Model) -> keras.Model:
    """The encoder's stage outputs, bottleneck last: each down-sampling (max-pool) output of
    a conv AE, each Dense layer's output of a dense AE, up to the bottleneck."""
    bottleneck = encoder_of(autoencoder).outputs[0]
    outputs = []
    for layer in autoencoder.layers:
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.Dense):
            outputs.append(layer.output)
        if layer.output is bottleneck:
            break
    if not outputs or outputs[-1] is not bottleneck:
        outputs.append(bottleneck)
    return keras.Model(autoencoder.inputs, outputs, name="encoder_stages")


class Encoder:
    """images -> an autoencoder's codes (its bottleneck), or with stages() every encoder
    stage's output (bottleneck last), each flattened to one row per image."""

    def __init__(self, autoencoder: keras.Model, batch_size: int):
        self.autoencoder, self.batch_size = autoencoder, batch_size
        self._codes = encoder_of(autoencoder)
        self._stages: keras.Model | None = None  # built on first use

    def _predict(self, model: keras.Model, images: np.ndarray) -> list[np.ndarray]:
        out = predict(model, images, self.batch_size)
        out = out if isinstance(out, list | tuple) else [out]
        return [np.asarray(a).reshape(len(a), -1) for a in out]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._predict(self._codes, images)[0]

    def stages(self, images: np.ndarray) -> list[np.ndarray]:
        if self._stages is None:
            self._stages = encoder_stages(self.autoencoder)
        return self._predict(self._stages, images)
