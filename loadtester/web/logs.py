"""The server's logs: one JSON object per line on stderr (JsonFormatter), one line per request
(log_access) and per run event (log_event), all on the "loadtester.serve" logger."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Any

log = logging.getLogger("loadtester.serve")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_access(**fields: Any) -> None:
    """One request: status >= 500 at ERROR, the rest at INFO."""
    level = logging.ERROR if fields.get("status", 0) >= 500 else logging.INFO
    log.log(level, "request", extra={"fields": {"event": "request", **fields}})


def log_event(event: str, **fields: Any) -> None:
    """One thing that happened (run_started, run_exited, ...); None fields are left out."""
    log.info(event, extra={"fields": {"event": event, **{k: v for k, v in fields.items()
                                                          if v is not None}}})


def setup_logging() -> None:
    """JSON lines on stderr for everything, uvicorn's loggers included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
