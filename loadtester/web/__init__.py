"""The web app and JSON API (Starlette on uvicorn): no command-line code and no SQL here; it
reads through loadtester.store (queries) and runs blasts as subprocesses.

    server      serve_forever(): logging, the socket, uvicorn, signals (ServeError)
    app         create_app(): the routes, error handlers and middleware stack (the API's map)
    context     ServeContext: configuration and state of one app
    endpoints   the /api/* and /healthz handlers;  pages: the UI pages and HTML/PDF reports
    api         the JSON payloads, read from the database (blocking; run in the thread pool)
    series      a run's per-second rows, merged from its windows and cached
    runs        RunManager: the blast subprocesses (spawn, watch, stop)
    validation  the POST /api/start body;  params: path/query/body checks;  errors: ApiError
    display     masked hosts, URLs, the summary line;  responses: JSON, errors, SSE
    ratelimit   RateLimiter;  logs: JSON log lines;  middleware/: one ASGI middleware per file
    ssrf        which targets are refused;  htmlreport: the report as HTML and PDF
"""
