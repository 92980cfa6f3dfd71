"""Data-driven requests: rows of a data file (`--data`, CSV with a header row or NDJSON)
fill `{{column}}` templates in a target's URL, header values and body. Every row renders one
request variant, once, before the clock starts: the engine only ever sends pre-built bytes.

Escaping depends on where a value goes: in a URL it is percent-encoded (`{{name|raw}}` keeps
it as it is, e.g. a whole path); in a header it must be Latin-1 text without control
characters; in a body it goes in as it is, or JSON-escaped with `{{name|json}}` (for a value
inside a JSON string).  `{{seq}}` is the row's number (from 1) and `{{uuid}}` a random UUID per
row; a data file's own column of that name wins.  Random choices (--data-order random,
{{uuid}}) come from --seed, or from a seed drawn for the run and stored with it.
"""
from __future__ import annotations

import array
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from loadtester.headers import CONTROL_RE
from loadtester.model import SpecError
from loadtester.units import format_bytes

if TYPE_CHECKING:
    from loadtester.spec import Target, Url

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:\|\s*(raw|json)\s*)?\}\}")
BUILT_INS = ("seq", "uuid")
DEFAULT_DATA_MAX_MB = 256
# What one variant costs besides its bytes: the bytes object's header and the list slot
# holding it (CPython), and per worker the engine's arrays (pointer, size, target id, HEAD
# flag, group) and its three counters.
VARIANT_OVERHEAD_BYTES = 33 + 8 + 8 + 8 + 4 + 1 + 4 + 24
DATA_ORDERS = ("sequential", "random")


class FeedError(ValueError):
    """A one-line description of a bad data file or template (becomes a SpecError)."""


@dataclasses.dataclass(frozen=True)
class DataTable:
    """A data file's rows, as read: the columns, their values (one list per column, None
    where an NDJSON row lacks the key: a pointer per value, not a tuple per row), and where
    each row began in the file (for messages)."""
    path: str
    columns: tuple[str, ...]
    values: tuple[list[str | None], ...]
    lines: array.array               # (int64: 100,000 line numbers in 0.8 MB, not 3.6)
    sha256: str
    size_bytes: int

    @property
    def rows(self) -> int:
        return len(self.lines)


def read_data_file(path: str, max_bytes: int = DEFAULT_DATA_MAX_MB << 20) -> DataTable:
    """CSV with a header row (.csv, or anything not starting with '{') or NDJSON (one JSON
    object per line: .ndjson, .jsonl, or a file starting with '{'). A file larger than
    `max_bytes` is refused before it is read (reading it holds it in memory)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise FeedError(f"data file {path!r} is {format_bytes(size)}, more than "
                                f"--data-max-mb ({format_bytes(max_bytes)}): use fewer rows "
                                "or raise --data-max-mb")
            raw = handle.read()
    except OSError as exc:
        raise FeedError(f"cannot read data file {path!r}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise FeedError(f"{path}:{line}: not UTF-8 text") from None
    digest = hashlib.sha256(raw).hexdigest()
    is_json = (path.lower().endswith((".ndjson", ".jsonl"))
               or (not path.lower().endswith(".csv") and text.lstrip().startswith("{")))
    columns, values, lines = (_read_ndjson if is_json else _read_csv)(path, text)
    if not lines:
        raise FeedError(f"data file {path!r} has no rows")
    return DataTable(path=path, columns=columns, values=values, lines=lines, sha256=digest,
                     size_bytes=len(raw))


Columns = tuple[tuple[str, ...], tuple[list[str | None], ...], array.array]


def _read_csv(path: str, text: str) -> Columns:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines = array.array("q")
    try:
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise FeedError(f"{path}:1: the first line must name the columns (a CSV header row)")
        columns = tuple(name.strip() for name in header)
        for index, name in enumerate(columns, 1):
            if not name:
                raise FeedError(f"{path}:1: column {index} has no name")
            if columns.index(name) != index - 1:
                raise FeedError(f"{path}:1: column {name!r} is named twice")
        values: tuple[list[str | None], ...] = tuple([] for _ in columns)
        line = reader.line_num + 1
        for row in reader:
            if row:             # (a blank line is no row)
                if len(row) != len(columns):
                    raise FeedError(f"{path}:{line}: {len(row)} fields, the header has "
                                    f"{len(columns)} ({', '.join(columns)})")
                for column, value in zip(values, row):
                    column.append(value)
                lines.append(line)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise FeedError(f"{path}:{reader.line_num}: bad CSV: {exc}") from None
    return columns, values, lines


def _read_ndjson(path: str, text: str) -> Columns:
    values: dict[str, list[str | None]] = {}
    lines = array.array("q")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FeedError(f"{path}:{number}: not JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise FeedError(f"{path}:{number}: each line must be a JSON object, not "
                            f"{type(record).__name__}")
        row = len(lines)
        for key, item in record.items():
            if isinstance(item, (dict, list)):
                item = json.dumps(item, separators=(",", ":"))
            elif item is None:
                item = ""
            elif isinstance(item, bool):
                item = "true" if item else "false"
            values.setdefault(key, [None] * row).append(str(item))
        lines.append(number)
        for column in values.values():
            if len(column) == row:
                # A key missing from a row is None there: an error only if a template uses it.
                column.append(None)
    return tuple(values), tuple(values.values()), lines


# What reads as a template but is not one ('{{name|bogus}}', '{{ id | JSON }}', '{{}}'):
# with --data it is refused, not sent as it is.  ('{{#each}}', '{{> x}}' are left alone.)
MALFORMED_RE = re.compile(r"\{\{\s*(?:[A-Za-z_][A-Za-z0-9_.-]*)?\s*(?:\|[^{}]*)?\}\}")


def check_templates(target: Target, where: str) -> None:
    """Every template-looking '{{...}}' of the target is a template: else one line."""
    texts = [target.url.text, *(value for _, value in target.headers)]
    if b"{{" in target.body:
        texts.append(target.body.decode("utf-8", "replace"))
    for text in texts:
        for match in MALFORMED_RE.finditer(text):
            if not PLACEHOLDER_RE.fullmatch(match.group(0)):
                raise FeedError(f"{where}: {match.group(0)!r} is not a template: use "
                                "{{column}}, {{column|raw}} or {{column|json}}")


def placeholders(text: str) -> list[str]:
    return [match.group(1) for match in PLACEHOLDER_RE.finditer(text)]


def head_placeholders(target: Target) -> list[str]:
    """The names its URL and header values use, in order."""
    return placeholders(target.url.text) + [name for _, value in target.headers
                                            for name in placeholders(value)]


def target_uses_data(target: Target) -> bool:
    return bool(head_placeholders(target)
                or (b"{{" in target.body and placeholders(target.body.decode("utf-8", "replace"))))


def check_columns(target: Target, table: DataTable, where: str) -> None:
    """Every name a template uses is a column or a built-in, and the URL's templates are in
    its path or query (a connection keeps to one scheme://host:port): else one line."""
    head = target.url.text.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    if "{{" in target.url.text.split("://", 1)[0] or "{{" in head:
        raise FeedError(f"{where}: a {{{{column}}}} may go in the URL's path and query, not in "
                        "its scheme, host or port (a connection keeps to one host)")
    names = set(head_placeholders(target))
    names.update(placeholders(target.body.decode("utf-8", "replace")))
    for name in sorted(names):
        if name not in table.columns and name not in BUILT_INS:
            raise FeedError(f"{table.path}:1: no column {name!r} for {{{{{name}}}}} in {where} "
                            f"(columns: {', '.join(table.columns)}; built-ins: "
                            f"{', '.join(BUILT_INS)})")


@dataclasses.dataclass(frozen=True)
class Variants:
    """The rendered requests of the data-driven targets.

    `requests[t]` holds target t's request bytes, one per row in the order they are sent (an
    empty tuple: the target uses no column and is sent as it is); `row_order[k]` is the data
    file's row index that order position k was filled from (sequential: k)."""
    source: str
    rows: int
    sha256: str
    order: str
    seed: int | None
    per_connection: bool
    requests: tuple[tuple[bytes, ...], ...]
    row_order: array.array                     # int64
    memory_bytes: int

    def describe(self) -> dict:
        """What the run stores about its data (config['traffic']['data'])."""
        return {"file": os.path.basename(self.source), "path": self.source, "rows": self.rows,
                "sha256": self.sha256, "order": self.order, "seed": self.seed,
                "per_connection": self.per_connection,
                "variants": sum(len(r) for r in self.requests),
                "memory_bytes": self.memory_bytes}


def render_variants(targets: list[Target], table: DataTable, *, order: str, seed: int | None,
                    per_connection: bool, max_bytes: int) -> Variants:
    """Render every data-driven target once per row (sequential or seeded-random order);
    FeedError naming file, line and column for a value that cannot go where it is put, or
    when the variants would need more than `max_bytes`."""
    from loadtester.spec import Target

    if order not in DATA_ORDERS:
        raise FeedError(f"invalid data order {order!r}: sequential or random")
    uses_uuid = uses_template(targets, "uuid")
    if seed is None and (order == "random" or uses_uuid):
        # Drawn, and stored with the run: --seed with it repeats the run's choices.
        seed = random.SystemRandom().randrange(1 << 32)
    shuffled = list(range(table.rows))
    if order == "random":
        random.Random(seed).shuffle(shuffled)
    row_order = array.array("q", shuffled)      # (0.8 MB for 100,000 rows, not 3.6)
    del shuffled
    uuid_source = random.Random(seed)
    row_uuids = [str(uuid.UUID(int=uuid_source.getrandbits(128), version=4))
                 for _ in range(table.rows)] if uses_uuid else None
    index_of = {name: i for i, name in enumerate(table.columns)}
    used_bytes = 0
    rendered: list[tuple[bytes, ...]] = []
    for target_index, target in enumerate(targets):
        if not target_uses_data(target):
            rendered.append(())
            continue
        check_columns(target, table, f"target {target_index + 1} ({target.method} "
                                     f"{target.url.text})")
        try:
            body_text = target.body.decode("utf-8") if b"{{" in target.body else None
        except UnicodeDecodeError as exc:
            raise FeedError(f"target {target_index + 1} ({target.method} {target.url.text}): "
                            f"its body is not UTF-8 text (byte {exc.start}), so {{{{column}}}} "
                            "cannot be filled in it") from None
        url_pieces = _url_pieces(target)
        static_tail: bytes | None = None
        prefix = b""
        if url_pieces is not None and body_text is None and not any(
                placeholders(value) for _, value in target.headers):
            # Only the request target varies: the rest of the request is built once.
            whole = target.request_bytes()
            prefix = f"{target.method} ".encode()
            static_tail = whole[whole.index(b" HTTP/1.1\r\n"):]
        out: list[bytes] = []
        for row_index in row_order:
            line = table.lines[row_index]

            def value(name: str, row_index=row_index, line=line) -> str:
                if name in index_of:
                    found = table.values[index_of[name]][row_index]
                    if found is None:
                        raise FeedError(f"{table.path}:{line}: no {name!r} in this row")
                    return found
                if name == "seq":
                    return str(row_index + 1)
                return row_uuids[row_index] if row_uuids else ""

            if url_pieces is not None:
                path = "".join([piece if i % 2 == 0 else quote(value(piece), safe="")
                                for i, piece in enumerate(url_pieces)])
            else:
                path = _rendered_url(target, fill_template(target.url.text, value, "url"),
                                     f"{table.path}:{line}").path
            if static_tail is not None:
                request = prefix + path.encode("ascii") + static_tail
                used_bytes += len(request) + VARIANT_OVERHEAD_BYTES
                if used_bytes > max_bytes:
                    raise _too_big(table, max_bytes, len(out) + sum(map(len, rendered)))
                out.append(request)
                continue
            headers = []
            for name, raw in target.headers:
                filled = fill_template(raw, value, "header")
                problem = _header_problem(filled)
                if problem:
                    column = placeholders(raw)[0] if placeholders(raw) else name
                    raise FeedError(f"{table.path}:{line}: column {column!r}: {problem} "
                                    f"(it goes in the {name} header)")
                headers.append((name, filled))
            body = (fill_template(body_text, value, "body").encode("utf-8") if body_text is not None
                    else target.body)
            url = dataclasses.replace(target.url, path=path)
            request = Target(url, target.method, tuple(headers), body).request_bytes()
            used_bytes += len(request) + VARIANT_OVERHEAD_BYTES
            if used_bytes > max_bytes:
                raise _too_big(table, max_bytes, len(out) + sum(map(len, rendered)))
            out.append(request)
        rendered.append(tuple(out))
    return Variants(source=table.path, rows=table.rows, sha256=table.sha256, order=order,
                    seed=seed, per_connection=per_connection, requests=tuple(rendered),
                    row_order=row_order, memory_bytes=used_bytes)


def _too_big(table: DataTable, max_bytes: int, done: int) -> FeedError:
    return FeedError(f"{table.path}: the request variants need more than "
                     f"{format_bytes(max_bytes)} (--data-max-mb) after {done:,} of them: "
                     "use fewer rows or raise --data-max-mb")


def _url_pieces(target: Target) -> list[str] | None:
    """The template's request target (path and query) as [literal, column, literal, ...,
    literal], literals already as parse_url encodes them: a value percent-encoded whole
    (quote(value, safe='')) then goes between them as it is, with the same result as
    parse_url on the filled-in URL and without parsing it 100,000 times. None when a
    placeholder is outside the path and query, or asks for |raw or |json (parsed per row)."""
    from loadtester.spec import URL_SAFE

    parts = urlsplit(target.url.text.strip())
    if placeholders(parts.scheme + parts.netloc):
        return None
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    split = PLACEHOLDER_RE.split(request_target)        # literal, name, filter, literal, ...
    if any(split[2::3]):
        return None
    pieces = []
    for index, piece in enumerate(split):
        if index % 3 == 0:
            pieces.append(quote(piece, safe=URL_SAFE))
        elif index % 3 == 1:
            pieces.append(piece)
    return pieces


def _rendered_url(target: Target, text: str, where: str) -> Url:
    """A filled-in URL parsed, on the template's own scheme, host and port."""
    from loadtester.spec import parse_url
    try:
        url = parse_url(text)
    except SpecError as exc:
        raise FeedError(f"{where}: {exc}") from None
    if (url.host, url.port, url.scheme) != (target.url.host, target.url.port, target.url.scheme):
        raise FeedError(f"{where}: a template may change the path and query of "
                        f"{target.url.text!r}, not its scheme, host or port")
    return url


def uses_template(targets: list[Target], name: str) -> bool:
    """Whether a target's URL, header values or body use {{name}}."""
    return any(name in head_placeholders(target)
               or name in placeholders(target.body.decode("utf-8", "replace")) for target in targets)


def fill_template(template: str, value, place: str) -> str:
    """`template` with its placeholders replaced, each escaped for `place` (url, header or
    body) unless a filter says otherwise."""
    def replace(match: re.Match) -> str:
        text = value(match.group(1))
        how = match.group(2)
        if how == "json":
            return json.dumps(text, ensure_ascii=False)[1:-1]
        if place == "url" and how != "raw":
            return quote(text, safe="")
        return text
    return PLACEHOLDER_RE.sub(replace, template)


def _header_problem(value: str) -> str | None:
    if CONTROL_RE.search(value):
        return "control characters (CR, LF, NUL, ...) cannot go in a header"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "a header value must be Latin-1 text"
    return None
