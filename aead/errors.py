"""Errors a user fixes in the command line, not in the code: `python -m aead.run` prints them
as one line naming the setting and what it accepts, and exits 2 (no traceback unless
HYDRA_FULL_ERROR=1)."""

from __future__ import annotations

EXIT_CONFIG = 2


class ConfigError(ValueError):
    """A setting that is unknown, out of range or contradicts another one."""


def _keys(node) -> list[str]:
    try:
        return sorted(str(k) for k in node.keys())
    except Exception:  # not a mapping: nothing to list
        return []


def config_error_line(exc: BaseException) -> str | None:
    """One line for a configuration error (Hydra's, OmegaConf's or aead's); None for others."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException) and exc.options:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        return f"{group}={option}: no such option; choose one of {', '.join(exc.options)}"
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            parent = getattr(cause, "parent_node", None)
            accepted = _keys(parent) if parent is not None else []
            group = cause.full_key.rpartition(".")[0] or "the config"
            tail = f"; {group} takes {', '.join(accepted)}" if accepted else ""
            return f"{cause.full_key}: no such setting{tail} (add it with +{cause.full_key}=...)"
        text = " ".join(str(exc).split())
        if text.startswith("Multiple values for experiment"):
            text += " (name it without '+': experiment=NAME)"
        return text
    if isinstance(exc, OverrideParseException):
        return "could not parse the overrides: " + str(exc).splitlines()[0]
    if isinstance(exc, ConfigError):
        return str(exc).strip()  # a missing-data error lists every place it looked
    return None
