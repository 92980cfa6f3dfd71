"""test_runs.variant_counts (schema 006): what each request variant of a --data run got.

zlib of: the number of variants n (uint64), then per variant its data row index and
[responses, successes, errors] (4 x int64), then the n request lines (METHOD target),
newline-separated; little-endian.  2.4 MB before compression for 100,000 variants."""
from __future__ import annotations

import array
import itertools
import operator
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import cast

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


def variants_served(counts: Sequence[int]) -> dict[str, int]:
    """How evenly the data's request variants were served (requests: responses + errors);
    `counts`: [responses, successes, errors] of each variant, one after another."""
    served = array.array("q", map(operator.add, counts[0::3], counts[2::3]))
    return {"count": len(served), "min": min(served, default=0), "max": max(served, default=0),
            "unserved": served.count(0)}


def _numbers_and_lines(blob: bytes) -> tuple[array.array[int], bytes]:
    data = zlib.decompress(blob)
    (n,) = _COUNT.unpack_from(data)
    at = _COUNT.size + n * _VARIANT.size
    numbers = array.array("q")
    numbers.frombytes(data[_COUNT.size:at])
    if sys.byteorder != "little":
        numbers.byteswap()
    return numbers, data[at:]


def merge_variant_counts(blobs: Sequence[bytes | None]) -> tuple[bytes, array.array[int]] | None:
    """The parts of one run (shards) added up variant by variant, when they all rendered the
    same variants (same rows, same request lines, same order): the packed blob and the flat
    [responses, successes, errors] counts (for variants_served); None when a part has none
    or they differ."""
    if not blobs or not all(blobs):
        return None
    decoded = [_numbers_and_lines(cast(bytes, blob)) for blob in blobs]
    first_numbers, first_lines = decoded[0]
    total = array.array("q", first_numbers)
    for numbers, lines in decoded[1:]:
        if lines != first_lines or numbers[0::4] != first_numbers[0::4]:
            return None
        for k in range(1, 4):
            total[k::4] = array.array("q", map(operator.add, total[k::4], numbers[k::4]))
    counts = array.array("q", bytes(8 * 3 * (len(total) // 4)))
    for k in range(3):
        counts[k::3] = total[k + 1::4]
    blob = pack_variant_counts(total[0::4], zip(counts[0::3], counts[1::3], counts[2::3]),
                               first_lines.split(b"\n") if len(total) else ())
    return blob, counts
