"""The one HTTP header grammar (-H, --headers-file, targets files, the web API's headers and
auth), and what a run stores of its headers (credentials without their secret)."""
from __future__ import annotations

import re
from collections.abc import Iterable

from loadtester.model import SpecError

# Control characters other than tab: never on the wire (no header or request splitting).
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")     # an HTTP token


class HeaderError(SpecError):
    """A header that may not go on the wire; `reason` says why without repeating it."""

    def __init__(self, shown: str, reason: str):
        super().__init__(f"invalid header {shown!r}: {reason}")
        self.reason = reason


def check_header(name: str, value: str, shown: str | None = None) -> tuple[str, str]:
    """The one header grammar (-H, --headers-file, targets files, the web API's headers and
    auth): the name an HTTP token, the value Latin-1 without control characters (tab aside),
    so that nothing can split the request.  `shown`: the header as the user wrote it."""
    shown = f"{name}: {value}" if shown is None else shown
    if not HEADER_NAME_RE.match(name):
        raise HeaderError(shown, "the name may hold only letters, digits and !#$%&'*+.^_`|~-")
    if CONTROL_RE.search(value):
        raise HeaderError(shown, "control characters (CR, LF, NUL, ...) are not allowed in a "
                                 "value")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise HeaderError(shown, "a value must be Latin-1 text (percent-encode or base64 "
                                 "anything else)") from None
    return name, value


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' (as -H takes it), checked by check_header."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise HeaderError(text, "use 'Name: value'")
    return check_header(name, value, shown=text)


def read_headers_file(path: str) -> list[tuple[str, str]]:
    """`--headers-file`: one 'Name: value' per line (UTF-8; LF or CRLF), each parsed as -H is;
    blank lines are skipped.  Secrets go through a file so that they never show on a command
    line (`ps`)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = handle.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read headers file {path!r}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    headers = []
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            headers.append(parse_header(line))
        except HeaderError as exc:
            # Not the line itself: the file is there to keep its values (tokens) out of sight,
            # and this message goes to terminals and CI logs.
            name = line.partition(":")[0].strip()
            named = f" {name!r}" if ":" in line and HEADER_NAME_RE.match(name) else ""
            raise SpecError(f"{path}:{number}: invalid header{named} (its value not shown): "
                            f"{exc.reason}") from None
    return headers


# Headers whose values are credentials. A run keeps them in the database without the secret
# (the file is backed up, exported and shared): Authorization keeps its scheme ("Bearer ***"),
# the others "***"; a {{column}} template is kept as written (it holds no secret itself).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key",
                            "api-key", "x-auth-token"})
HIDDEN_VALUE = "***"


def stored_header_value(name: str, value: str) -> str:
    """What a run stores of a header's value: the value, or for a credential (SECRET_HEADERS)
    its scheme and HIDDEN_VALUE."""
    lowered = name.lower()
    if lowered not in SECRET_HEADERS or "{{" in value:
        return value
    scheme, blank, _ = value.strip().partition(" ")
    return f"{scheme} {HIDDEN_VALUE}" if lowered.endswith("authorization") and blank \
        else HIDDEN_VALUE


def stored_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers as a run stores them (stored_header_value); what goes on the wire is
    unchanged."""
    return tuple((name, stored_header_value(name, value)) for name, value in headers)
