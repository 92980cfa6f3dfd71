# loadtester image: non-root (UID 1000), app at /home/pipeops/app, data on a volume.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY engine ./engine
COPY loadtester ./loadtester
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/pipeops pipeops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/entrypoint.sh /usr/local/bin/loadtester-entrypoint
WORKDIR /home/pipeops/app
RUN mkdir -p /home/pipeops/app/data && chown -R 1000:1000 /home/pipeops/app \
 && chmod 0750 /home/pipeops/app/data
USER 1000:1000
ENV DB_PATH=/home/pipeops/app/data/loadtest.db \
    PORT=8080 \
    PYTHONUNBUFFERED=1
VOLUME ["/home/pipeops/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["loadtester", "healthcheck"]
ENTRYPOINT ["loadtester-entrypoint"]
# The web app and API on $PORT; set LOADTESTER_TOKEN when it is reachable beyond localhost.
CMD ["loadtester", "serve", "--host", "0.0.0.0"]
