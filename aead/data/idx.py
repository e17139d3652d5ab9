"""The IDX file format (MNIST, Fashion-MNIST): reading and, for tests, writing."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from aead.data.lookup import DataError

# IDX type codes (third byte of the magic number) -> numpy dtype, big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in .gz) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: {len(raw)} bytes, too short for a header")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex()} "
            "(expected 00 00 <type> <ndim>)"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated: header needs {header_len} bytes, has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected:
        raise DataError(
            f"{path} is malformed: header says shape {shape} ({expected} bytes of data), "
            f"file holds {payload} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header_len)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz); tests use it."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"no IDX type for dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    body = array.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + body)
