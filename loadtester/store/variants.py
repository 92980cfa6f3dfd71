"""test_runs.variant_counts (schema 006): what each request variant of a --data run got.

zlib of: the number of variants n (uint64), then per variant its data row index and
[responses, successes, errors] (4 x int64), then the n request lines (METHOD target),
newline-separated; little-endian.  2.4 MB before compression for 100,000 variants."""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

_COUNT = struct.Struct("<Q")
_VARIANT = struct.Struct("<qqqq")
VARIANT_COLUMNS = ("row", "request", "requests", "successes", "errors")


def pack_variant_counts(rows: Iterable[int], counts: Iterable[tuple[int, int, int]],
                        request_lines: Iterable[bytes]) -> bytes:
    numbers = [_VARIANT.pack(row, responses, successes, errors)
               for row, (responses, successes, errors) in zip(rows, counts)]
    return zlib.compress(_COUNT.pack(len(numbers)) + b"".join(numbers)
                         + b"\n".join(request_lines), 6)


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
