"""Every numeric setting is checked before work starts: the shipped configs pass, and each
numeric setting of each of them, set out of range, is refused naming the setting and value."""

from __future__ import annotations

import copy

import pytest
from hydra import compose
from omegaconf import OmegaConf

from aead import settings
from aead.errors import ConfigError
from tests.helpers import CONF, REPO, hydra_config

GROUPS = ("model", "loss", "score", "scenario", "threshold", "trainer", "data")


def _shipped_configs() -> dict[str, dict]:
    """Every group option, every named experiment and every detector cell, composed."""
    choices = [
        [f"{group}={p.stem}"] for group in GROUPS for p in sorted((CONF / group).glob("*.yaml"))
    ]
    choices += [[f"experiment={p.stem}"] for p in sorted((REPO / "experiments").glob("*.yaml"))]
    choices += [
        ["experiment=one_class_benchmark", f"+detector={p.stem}"]
        for p in sorted((CONF / "detector").glob("*.yaml"))
    ]
    out = {}
    with hydra_config():
        for overrides in choices:
            cfg = compose("config", overrides)
            out[" ".join(overrides)] = OmegaConf.to_container(cfg, resolve=True)
    return out


CONFIGS = _shipped_configs()


def _numeric_leaves(node, path=""):
    """(dotted path, value) of every number or list of numbers in a config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numeric_leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        if node and all(isinstance(v, int | float) and not isinstance(v, bool) for v in node):
            yield path, node
        else:
            for i, value in enumerate(node):
                yield from _numeric_leaves(value, f"{path}[{i}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path, node


def _set(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node, parts = cfg, path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return cfg


def _rule_for(path: str) -> settings.Rule | None:
    if path.startswith("score."):
        return settings.SCORE_RULES.get(path.rsplit(".", 1)[-1])
    return settings.RULES.get(path)


def test_the_shipped_configs_pass():
    for cfg in CONFIGS.values():
        settings.validate(cfg)  # raises on the first bad value, naming it


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_numeric_setting_has_a_rule_and_refuses_an_out_of_range_value(name):
    cfg = CONFIGS[name]
    leaves = dict(_numeric_leaves(cfg))
    # settings that are null by default (limits, n_anomalies) are numeric too
    leaves.update({rule: None for rule in settings.RULES if settings._lookup(cfg, rule)[0]})
    assert leaves
    for path, value in leaves.items():
        assert _rule_for(path) is not None, f"{path} (= {value}) has no rule in aead/settings.py"
        bad = [-1] if isinstance(value, list) else -1  # below every rule's range
        with pytest.raises(ConfigError) as err:
            settings.validate(_set(cfg, path, bad))
        assert str(err.value).startswith(f"{path}={bad}: not accepted; {path} takes "), err.value


@pytest.mark.parametrize(
    "path, value",
    [("data.val_fraction", 1.0), ("scenario.train_anomaly_fraction", 1.0),
     ("data.channels", 2), ("data.image_size", [0, 5]), ("data.on_corrupt", "ignore"),
     ("scenario.normal_class", ""), ("threshold.q", 100.5), ("trainer.kfold", 1),
     ("trainer.epochs", 2.5), ("trainer.epochs", True), ("compute.threads", "many"),
     ("model.dropout", 1.0), ("trainer.learning_rate", float("nan")), ("model.stage", [1, 0]),
     ("model.stage", [])],
)  # fmt: skip
def test_values_above_a_range_or_of_the_wrong_kind_are_refused(path, value):
    cfg = next(c for c in CONFIGS.values() if settings._lookup(c, path)[0])
    with pytest.raises(ConfigError, match=f"^{path}="):
        settings.validate(_set(cfg, path, value))
