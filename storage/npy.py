""".npy arrays as the store's shards hold them: written without pickle, read back validated.

A shard member is untrusted bytes, so `check_npy` checks that the header describes exactly the bytes
that follow (no object dtype, no negative or missing dimensions) before `load_npy` returns a read-only
view of them, and `npy_bytes` writes with allow_pickle=False.
"""

from __future__ import annotations

import ast
import functools
import io
import math

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """np.load(allow_pickle=False) of a .npy member, as a read-only view of `data`; any damage raises
    ValueError saying what is wrong."""
    dtype, shape, fortran, start = check_npy(data)
    array = np.frombuffer(data, dtype, count=math.prod(shape), offset=start)
    return array.reshape(shape, order="F" if fortran else "C")


def check_npy(data: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran order, offset of the data) of a .npy member, after checking that its header
    describes exactly its bytes: no object dtype (pickle), no negative or missing dimensions."""
    if data[:6] != NPY_MAGIC or len(data) < 10:
        raise ValueError("not a .npy array (bad magic bytes)")
    width = 2 if data[6] == 1 else 4  # format 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one
    start = 8 + width + int.from_bytes(data[8 : 8 + width], "little")
    dtype, shape, fortran = _npy_header(data[8 + width : start])
    if len(data) - start != math.prod(shape) * dtype.itemsize:
        raise ValueError(
            f".npy shape {shape} of {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, "
            f"the member holds {len(data) - start}"
        )
    return dtype, shape, fortran, start


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Parsed once per distinct header: headers repeat across samples of the same shape, and parsing the
    header text is most of what np.load spends on a small array."""
    try:
        fields = ast.literal_eval(header.decode("latin1"))  # a dict literal, as np.load reads it
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
        shape, fortran = fields["shape"], fields["fortran_order"]
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError) as err:
        raise ValueError(f".npy header cannot be read ({err!r})") from None
    if dtype.hasobject:
        raise ValueError(".npy holds Python objects, which need pickle: refused (allow_pickle=False)")
    # A negative dimension would make the element count negative, and np.frombuffer reads count -1 as "all".
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f".npy shape {shape!r} is not a tuple of non-negative integers")
    if type(fortran) is not bool:
        raise ValueError(f".npy fortran_order {fortran!r} is not true or false")
    return dtype, shape, fortran
