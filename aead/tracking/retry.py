"""Calls to a tracking store that a busy SQLite database (parallel jobs) may refuse for a
moment: retried with back-off. Plain Python, so that every layer can use it."""

from __future__ import annotations

import time
from collections.abc import Callable

from aead.tracking import lifecycle

RETRY_SECONDS = 60.0


def _is_transient(exc: Exception, insert_race: bool = False) -> bool:
    text = str(exc).lower()
    if insert_race and "unique constraint" in text:
        return True  # SQLite's and PostgreSQL's words for a row another job inserted first
    return "database is locked" in text or "database is busy" in text


def retrying(call: Callable, *args, insert_race: bool = False, **kwargs):
    """call(*args, **kwargs), retried with back-off while SQLite reports a locked database.
    insert_race: the call gets-or-creates a shared row (a dataset), so losing the race to
    insert it is retried too: the second try finds the row. Runs as a critical section: a
    signal does not cut a write to the store in half."""
    deadline, delay = time.monotonic() + RETRY_SECONDS, 0.05
    while True:
        try:
            with lifecycle.critical():
                return call(*args, **kwargs)
        except Exception as exc:
            if not _is_transient(exc, insert_race) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
