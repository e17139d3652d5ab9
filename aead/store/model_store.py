"""The one place a detector gets a trained model from: the local cache, else the tracking
server's shared store, else it trains the model and publishes it to both.

A detector asks `store.obtain(key, fields, train)`; it never sees the cache, the shared store or
their locks. Jobs running side by side that need the same key: one trains, the others wait,
then reuse (on one machine through the cache's file lock, across machines through a claim on
the tracking server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aead.errors import ConfigError
from aead.store import shared as shared_models
from aead.store.cache import ModelCache

log = logging.getLogger("aead")


@dataclass
class Obtained:
    """A model and how it was obtained: source 'trained' or 'reused', from where."""

    model: object
    history: dict
    source: str
    trained_by: str
    note: str  # why it was trained (no entry, a corrupt one) or where it was found
    found_in: str  # "local cache", "tracking server" or "" (trained here)
    key: str = ""


def cache_dir(settings: Mapping | None, base_dir: str | os.PathLike) -> Path:
    """cache.dir, else <base_dir>/.aead_cache."""
    return Path((settings or {}).get("dir") or Path(base_dir) / ".aead_cache")


class ModelStore:
    """Trained models by training key. `cache` None: every model is trained (cache.enabled=
    false); `shared` None: no tracking server to share models through."""

    def __init__(self, cache: ModelCache | None, shared=None, run_id: str = ""):
        self.cache, self.shared, self.run_id = cache, shared, run_id

    @classmethod
    def for_run(cls, settings: Mapping | None, base_dir, tracking_uri: str, run_id: str):
        """The store the `cache` settings describe, for the run run_id: the local cache
        (cache.enabled, cache.dir) and the tracking server's shared store (cache.shared)."""
        settings = dict(settings or {})
        try:
            on = shared_models.enabled(settings.get("shared", "auto"), tracking_uri)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not settings.get("enabled", True):
            return cls(None, None, run_id)
        shared = shared_models.SharedModels(tracking_uri, run_id) if on else None
        return cls(ModelCache(cache_dir(settings, base_dir)), shared, run_id)

    @property
    def enabled(self) -> bool:
        return self.cache is not None

    def obtain(self, key: str, fields: dict, train: Callable[[], tuple]) -> Obtained:
        """The model stored under key, else train() -> (model, history), stored under key."""
        got = self._obtain(key, fields, train)
        got.key = key
        return got

    def _obtain(self, key: str, fields: dict, train) -> Obtained:
        cache, shared = self.cache, self.shared

        def announce_wait(owner: str = "") -> None:
            who = f"run {owner}" if owner else "another job"
            log.info("waiting for %s, which is training this model (%s)", who, key[:12])

        locked = cache.training_lock(key, on_wait=announce_wait) if cache else None
        with locked or contextlib.nullcontext():
            cached, reason = cache.load(key) if cache else (None, "cache disabled")
            if cached is not None:
                log.info("reusing the model trained by run %s", cached.trained_by_run)
                return Obtained(
                    cached.model, cached.history, "reused", cached.trained_by_run, reason,
                    "local cache",
                )  # fmt: skip
            if cache and reason != "not cached yet":
                log.info("%s: retraining", reason)
            if cache is None or shared is None:
                model, history = train()
                if cache:
                    cache.store(key, fields, model, history, self.run_id)
                return Obtained(model, history, "trained", self.run_id, reason, "")
            with shared.claim(key, on_wait=announce_wait) as holder:
                if holder is not None:
                    cached, why = self._fetch_shared(key, holder)
                    if cached is not None:
                        log.info("reusing the model trained by run %s (from the tracking server)",
                                 cached.trained_by_run)  # fmt: skip
                        return Obtained(
                            cached.model, cached.history, "reused", cached.trained_by_run, why,
                            "tracking server",
                        )  # fmt: skip
                    log.info("%s: retraining", why)
                    reason = why
                model, history = train()
                shared.upload(key, cache.store(key, fields, model, history, self.run_id))
            return Obtained(model, history, "trained", self.run_id, reason, "")

    def _fetch_shared(self, key: str, run_id: str):
        """Downloads run_id's entry for key into the local cache; (entry, note) as cache.load."""
        staging = self.cache.staging()
        try:
            folder = self.shared.download(key, run_id, staging)
            self.cache.publish(key, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        cached, reason = self.cache.load(key)
        return cached, (f"found on the tracking server in run {run_id}" if cached else reason)
