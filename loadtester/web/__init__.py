"""The web app and JSON API (Starlette on uvicorn): no click, no SQL here; it reads through
loadtester.store and runs blasts as subprocesses."""
