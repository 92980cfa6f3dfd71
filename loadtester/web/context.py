"""ServeContext: what the app is configured with (database, limits, token) and the state it
keeps (the blasts it started, the series cache).  One per app; endpoints reach it as
`request.app.state.ctx` (context_of)."""
from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from loadtester import store
from loadtester.analysis.series import SeriesCache
from loadtester.web.errors import ApiError
from loadtester.web.middleware.proxies import DEFAULT_TRUSTED_PROXIES
from loadtester.web.ratelimit import RateLimiter
from loadtester.web.runs import RunManager

if TYPE_CHECKING:
    import apsw
    from starlette.requests import Request

WEB_DIR = pathlib.Path(__file__).resolve().parent / "static"


@dataclass
class ServeContext:
    db_path: pathlib.Path
    allow_private: bool = False
    token: str | None = None
    limiter: RateLimiter | None = None
    max_per_client: int = 3
    max_running: int = 10
    web_dir: pathlib.Path = WEB_DIR
    loopback_only_hosts: bool = False
    trusted_proxies: list[str] = field(default_factory=lambda: [DEFAULT_TRUSTED_PROXIES])
    manager: RunManager = field(init=False)
    cache: SeriesCache = field(default_factory=SeriesCache)
    deleted: set[str] = field(default_factory=set)     # runs deleted here (the manager may
                                                       # still hold their RunProcess)

    def __post_init__(self) -> None:
        self.manager = RunManager(self.db_path)

    @contextlib.contextmanager
    def reader(self) -> Iterator[apsw.Connection]:
        """A read-only connection for one request (503 when the database cannot be opened)."""
        try:
            conn = store.open_database(self.db_path, readonly=True, create=False)
        except store.StoreError as exc:
            raise ApiError(503, f"database unavailable: {exc}") from None
        try:
            yield conn
        finally:
            conn.close()


def context_of(request: Request) -> ServeContext:
    """The ServeContext of the app serving `request` (create_app sets app.state.ctx)."""
    return cast(ServeContext, request.app.state.ctx)
