"""test_runs.variant_counts (schema 006): what each request variant of a --data run got.

zlib of: the number of variants n (uint64), then per variant its data row index and
[responses, successes, errors] (4 x int64), then the n request lines (METHOD target),
newline-separated; little-endian.  2.4 MB before compression for 100,000 variants."""
from __future__ import annotations

import array
import itertools
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator

_COUNT = struct.Struct("<Q")
_VARIANT = struct.Struct("<qqqq")
_LINES_PER_CHUNK = 4096
VARIANT_COLUMNS = ("row", "request", "requests", "successes", "errors")


def pack_variant_counts(rows: Iterable[int], counts: Iterable[tuple[int, int, int]],
                        request_lines: Iterable[bytes]) -> bytes:
    numbers = array.array("q")               # (no object per variant: 100,000 in 3.2 MB)
    for row, triple in zip(rows, counts):
        numbers.append(row)
        numbers.extend(triple)
    if sys.byteorder != "little":
        numbers.byteswap()
    packer = zlib.compressobj(6)
    out = [packer.compress(_COUNT.pack(len(numbers) // 4)), packer.compress(numbers)]
    lines = iter(request_lines)
    separator = b""
    while chunk := list(itertools.islice(lines, _LINES_PER_CHUNK)):   # (a chunk at a time)
        out.append(packer.compress(separator + b"\n".join(chunk)))
        separator = b"\n"
    out.append(packer.flush())
    return b"".join(out)


def unpack_variant_counts(blob: bytes) -> Iterator[dict[str, int | str]]:
    """Per variant: its data row (numbered from 1, as the file's data rows), request line,
    requests (responses + transport errors), successes and errors (transport + status)."""
    data = zlib.decompress(blob)
    (n,) = _COUNT.unpack_from(data)
    at = _COUNT.size + n * _VARIANT.size
    lines = data[at:].split(b"\n") if n else []
    for index, line in zip(range(n), lines):
        row, responses, successes, errors = _VARIANT.unpack_from(data, _COUNT.size + index * _VARIANT.size)
        yield {"row": row + 1, "request": line.decode("latin-1"), "requests": responses + errors,
               "successes": successes, "errors": responses - successes + errors}
