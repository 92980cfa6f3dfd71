"""The web app and JSON API (Starlette on uvicorn): no command-line code and no SQL here; it
reads through loadtester.store (queries) and runs blasts as subprocesses.

    server      serve_forever(): logging, the socket, uvicorn, signals (ServeError)
    app         create_app(): the routes, error handlers and middleware stack (the API's map)
    context     ServeContext: configuration and state of one app
    endpoints   the /api/*, /metrics and /healthz handlers;  pages: the UI pages, reports
    api         the JSON payloads, read from the database (blocking; run in the thread pool)
    runs        RunManager: the blast subprocesses (spawn, watch, stop)
    validation  the POST /api/start body (requestheaders: its headers; targetauth: its auth);
                params: path/query/body checks;  errors: ApiError
    pipeops     the original PipeOps body and response shapes (the drop-in)
    reads       reads beyond the summary columns, made of store.queries functions
    prometheus  GET /metrics: the runs in the Prometheus text format
    responses   JSON, errors, SSE
    ratelimit   RateLimiter;  logs: JSON log lines;  middleware/: one ASGI middleware per file
    ssrf        which targets are refused

The report files, per-second series, verdicts and display strings it shows live below it, in
loadtester.reports and loadtester.analysis (the command line shows the same).
"""
