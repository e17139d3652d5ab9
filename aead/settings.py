"""Every numeric setting checked before any work starts: a bad value is one line naming the
setting, the value and what is accepted (a ConfigError: `python -m aead.run` exits 2).

One table of rules, by the setting's dotted name; the score group's rules apply at any depth
of it (ensemble members, a companion's inner score), by the key's own name.
tests/test_settings.py walks every numeric setting of every shipped config and fails on one
that has no rule here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aead.errors import ConfigError

# Settings added after sweeps were first recorded, with their defaults: a run's config hash
# leaves them out while they are at these defaults (so the jobs of an existing sweep keep their
# hashes and still resume), and the reports treat a run recorded before a setting existed as
# one at its default.
ADDED_DEFAULTS = {
    "data": {
        "channels": None,
        "image_size": None,
        "interpolation": "bilinear",
        "test_fraction": 0.2,
        "split_seed": 0,
        "on_corrupt": "fail",
    },
    "maps": {"sigma": 1.0},
}
ADDED_GROUPS = ("maps",)  # groups that did not exist: left out entirely while at defaults


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[object], bool]
    accepted: str  # what the error says is accepted


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return _is_number(value) and float(value).is_integer() and not isinstance(value, float)


def integer(minimum: int, maximum: int | None = None) -> Rule:
    upper = f" and ≤ {maximum}" if maximum is not None else ""
    return Rule(
        lambda v: _is_int(v) and v >= minimum and (maximum is None or v <= maximum),
        f"a whole number ≥ {minimum}{upper}",
    )


def optional(rule: Rule, meaning: str) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"{rule.accepted}, or null ({meaning})")


def number(low: float, high: float | None = None, *, low_open=False, high_open=False) -> Rule:
    def accepts(v) -> bool:
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if high is None:
        text = f"a number {'>' if low_open else '≥'} {low:g}"
    else:
        text = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Rule(accepts, text)


def sizes() -> Rule:
    return Rule(
        lambda v: (
            isinstance(v, Sequence)
            and not isinstance(v, str)
            and len(v) > 0
            and all(_is_int(n) and n >= 1 for n in v)
        ),
        "a non-empty list of whole numbers ≥ 1",
    )


def stages() -> Rule:
    def accepts(v) -> bool:
        if _is_int(v):
            return v >= 0
        listed = isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        return listed and all(_is_int(n) and n >= 0 for n in v) and list(v) == sorted(set(v))

    return Rule(accepts, "a whole number ≥ 0, or a list of them in increasing order")


def class_name_or_index() -> Rule:
    return Rule(
        lambda v: (_is_int(v) and v >= 0) or (isinstance(v, str) and v.strip() != ""),
        "a class index ≥ 0 (in sorted folder-name order) or a class folder name",
    )


def image_size() -> Rule:
    def accepts(v) -> bool:
        if v is None or (_is_int(v) and v >= 1):
            return True
        pair = isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2
        return pair and all(_is_int(n) and n >= 1 for n in v)

    return Rule(accepts, "[height, width] or one whole number ≥ 1, or null (the files' own size)")


def one_of(*choices) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


RULES: dict[str, Rule] = {
    "seed": integer(0),
    "trainer.epochs": integer(1),
    "trainer.batch_size": integer(1),
    "trainer.learning_rate": number(0, low_open=True),
    "trainer.patience": integer(0),
    "trainer.kfold": Rule(
        lambda v: _is_int(v) and (v == 0 or v >= 2), "0 (off) or a whole number ≥ 2"
    ),
    "data.train_limit": optional(integer(1), "every image"),
    "data.test_limit": optional(integer(1), "every image"),
    "data.val_fraction": number(0, 1, low_open=True, high_open=True),
    "data.channels": Rule(lambda v: v in (None, 1, 3), "1, 3, or null (the data's own)"),
    "data.image_size": image_size(),
    "data.interpolation": one_of("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"),
    "data.test_fraction": number(0, 1, low_open=True, high_open=True),
    "data.split_seed": integer(0),
    "data.on_corrupt": one_of("fail", "skip"),
    "data.max_memory_gb": number(0, low_open=True),
    "scenario.normal_class": class_name_or_index(),
    "scenario.anomaly_class": class_name_or_index(),
    "scenario.fraction": number(0, 1, high_open=True),
    "scenario.train_anomaly_fraction": number(0, 1, high_open=True),
    "scenario.labeled_anomalies": integer(0),
    "scenario.n_anomalies": optional(integer(1), "as many as the normal test images"),
    "threshold.k": number(0, low_open=True),
    "threshold.q": number(0, 100, low_open=True),
    "tracking.heartbeat_s": number(0, low_open=True),
    "maps.sigma": number(0),
    "compute.threads": Rule(
        lambda v: v in (None, "auto") or (_is_int(v) and v >= 1), "'auto' or a whole number ≥ 1"
    ),
    "model.filters": sizes(),
    "model.units": sizes(),
    "model.dense_units": integer(1),
    "model.dropout": number(0, 1, high_open=True),
    "model.rep_dim": integer(1),
    "model.kernel_size": integer(1),
    "model.weight_decay": number(0),
    "model.eps": number(0, low_open=True),
    "model.shift": integer(0),
    "model.min_std": number(0, low_open=True),
    "model.patch": integer(1),
    "model.stride": integer(1),
    "model.bank_size": integer(1),
    "model.stage": stages(),
    "model.neighbourhood": integer(1),
    "model.texture_weight": number(0),
    "model.texture_window": integer(1),
    "model.texture_quantile": number(0, 1),
    "model.residual_weight": number(0),
    "model.residual_sigma": number(0),
    # PyOD's settings (model.params) that aead's configs set; PyOD checks the rest itself
    "model.params.n_neighbors": integer(1),
    "model.params.n_estimators": integer(1),
    "model.params.nu": number(0, 1, low_open=True),
}

# the score group's settings, wherever they appear in it
SCORE_RULES: dict[str, Rule] = {
    "top_percent": number(0, 100, low_open=True),
    "sigma": number(0),
    "reduce": one_of("max", "top_mean"),
    "k": integer(1),
    "weight": number(0),
    "perturbation": number(0, 1, low_open=True, high_open=True),
    "seed": integer(0),
}


def _lookup(cfg: Mapping, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check(name: str, value, rule: Rule) -> None:
    if not rule.accepts(value):
        shown = "null" if value is None else value
        raise ConfigError(f"{name}={shown}: not accepted; {name} takes {rule.accepted}")


def _check_score(node, name: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{name}.{key}"
            if key in SCORE_RULES and not isinstance(value, Mapping | list):
                _check(child, value, SCORE_RULES[key])
            else:
                _check_score(value, child)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            _check_score(item, f"{name}[{i}]")


def validate(cfg: Mapping) -> None:
    """Raises ConfigError for the first setting out of its range (a resolved config, or an
    OmegaConf DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    for name, rule in RULES.items():
        present, value = _lookup(cfg, name)
        if present:
            _check(name, value, rule)
    _check_score(cfg.get("score") or {}, "score")
    _check_classes(cfg.get("scenario") or {})


def _check_classes(scenario: Mapping) -> None:
    """A class of a registered dataset (whose classes are known without reading it)."""
    from aead.data.sources import DATASETS, known_class, unknown_class

    source = DATASETS.get(str(scenario.get("dataset")))
    classes = getattr(source, "classes", None)
    for key in ("normal_class", "anomaly_class"):
        if classes and key in scenario and not known_class(scenario[key], classes):
            setting = f"scenario.{key}"
            raise ConfigError(unknown_class(setting, scenario[key], source.name, classes))


# Settings that change where or how a run is recorded or computed, not its result: they are
# left out of the config hash that identifies a sweep's job when the sweep is resumed.
NOT_RESULT = ("tracking", "cache", "compute", "run_name")
NOT_RESULT_TRAINER = ("verbose",)
NOT_RESULT_DATA = ("decode_cache", "cache_dir", "max_memory_gb")


def config_hash(cfg) -> str:
    """SHA-256 of the resolved config (seed included), minus NOT_RESULT settings: what
    identifies a sweep's job when the sweep is resumed."""
    from omegaconf import OmegaConf

    config = {
        k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_RESULT
    }
    trainer = config.get("trainer") or {}
    config["trainer"] = {k: v for k, v in trainer.items() if k not in NOT_RESULT_TRAINER}
    if "data" in config:
        config["data"] = {k: v for k, v in config["data"].items() if k not in NOT_RESULT_DATA}
    for group, defaults in ADDED_DEFAULTS.items():
        if isinstance(config.get(group), dict):
            kept = {k: v for k, v in config[group].items() if defaults.get(k, object()) != v}
            if kept or group not in ADDED_GROUPS:
                config[group] = kept
            else:
                del config[group]
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
