"""Credentials never leave the process unmasked: `redact` masks the password of any
`scheme://user:password@host` in a text; `mask_log_records()` applies it to every log record
the process creates (Hydra's own lines included, whatever logging config Hydra applies).
Imports nothing heavy."""

from __future__ import annotations

import logging
import re
from pathlib import Path

MASK = "***"
# scheme://user:password@  (user may be empty: redis://:password@host; Hydra's log lines
# escape the colons: http\://user\:password@host)
_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*\\?://[^:/@\s'\"]*?)(?P<sep>\\?:)[^/\s'\"]+@"
)


def redact(text: str) -> str:
    """'postgresql://me:secret@db/x' -> 'postgresql://me:***@db/x'; other text unchanged."""
    return _CREDENTIALS.sub(rf"\g<head>\g<sep>{MASK}@", text)


def redact_file(path: str | Path) -> None:
    """Mask credentials inside a text file that another tool wrote (Hydra's .hydra/*.yaml)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    masked = redact(text)
    if masked != text:
        path.write_text(masked)


def _mask_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is logging's to report, not ours
        return record
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, None
    return record


class RedactFilter(logging.Filter):
    """A logging filter that masks credentials in the formatted message (for handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record)
        return True


def mask_log_records() -> None:
    """Mask credentials in every log record created from now on in this process. A record
    factory survives the logging reconfigurations Hydra makes around each job, unlike
    handler filters. Idempotent."""
    current = logging.getLogRecordFactory()
    if getattr(current, "aead_masks", False):
        return

    def factory(*args, **kwargs):
        return _mask_record(current(*args, **kwargs))

    factory.aead_masks = True
    logging.setLogRecordFactory(factory)
