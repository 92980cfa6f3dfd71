# loadtester image: non-root (UID 1000), app at /home/pipeops/app, data on a volume.
# BASE: a Debian-based image with Python 3.11 and `python3 -m venv`. The default is the official
# image; tests/test_container.py builds FROM a debootstrapped Debian bookworm (its python3 is 3.11).
ARG BASE=python:3.11-slim

# Build stage: compile the Cython engine into a wheel, install it with its dependencies into the
# venv /opt/venv. The runtime stage copies only that venv: no compiler, no wheels, no pip run there.
FROM ${BASE} AS build
# Debian's python3 needs python3-dev for Python.h (the official image has it in /usr/local/include).
# Not pinned (DL3008): the versions are those of the base's Debian release, and a pin would break
# the build as soon as its mirror moves on to a point release.
# hadolint ignore=DL3008
RUN if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))'; \
    then headers=""; else headers="python3-dev"; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev ${headers:+"$headers"} \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY engine ./engine
COPY loadtester ./loadtester
# PIP_CERT (optional): a CA bundle for pip behind a TLS-inspecting proxy; mount it for the build
# (`-v /etc/ssl/certs:/etc/ssl/certs:ro`), nothing of it stays in the image.
ARG PIP_CERT
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl

FROM ${BASE}
# DejaVu Sans for the PDF reports (text in any script it covers, not Latin-1 only).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --user-group --create-home --home-dir /home/pipeops pipeops
COPY --from=build /opt/venv /opt/venv
COPY deploy/entrypoint.sh /usr/local/bin/loadtester-entrypoint
WORKDIR /home/pipeops/app
RUN mkdir -p /home/pipeops/app/data && chown -R 1000:1000 /home/pipeops/app \
 && chmod 0750 /home/pipeops/app/data
USER 1000:1000
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DB_PATH=/home/pipeops/app/data/loadtest.db \
    PORT=8080 \
    PYTHONUNBUFFERED=1
VOLUME ["/home/pipeops/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["loadtester", "healthcheck"]
ENTRYPOINT ["loadtester-entrypoint"]
# The web app and API on $PORT; set LOADTESTER_TOKEN when it is reachable beyond localhost.
CMD ["loadtester", "serve", "--host", "0.0.0.0"]
