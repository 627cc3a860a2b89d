# streamsync: `docker build -t streamsync .`, then `docker run streamsync --help`.
#
# Two stages: the build stage installs streamsync and its dependencies into a virtualenv;
# the runtime stage copies only that virtualenv and the data files (schemas, examples)
# onto a clean base, so no build context, pip cache or compiler ends up in the image.
# The runtime runs as uid 10001 and writes nothing outside its volumes, so it works with a
# read-only root filesystem: state goes to /var/lib/streamsync/state, scratch to /tmp
# (mount a tmpfs or emptyDir there when the root is read-only).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/streamsync/bin:$PATH
RUN python -m venv /opt/streamsync
WORKDIR /app
# .dockerignore keeps the virtualenv, caches, tests, the chart and git history out.
COPY . /app
# The virtualenv's pip (first on PATH); byte-code is compiled here, at build time, because
# the runtime's root filesystem may be read-only.
RUN pip install /app \
    && python -m compileall -q /opt/streamsync

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/streamsync/bin:$PATH \
    STREAMSYNC_HOME=/app
# Owned by the user so named volumes mounted there (compose's demo-data and state volumes)
# are writable: Docker copies the image directory's ownership into a new volume.
RUN groupadd --gid 10001 streamsync \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin streamsync \
    && mkdir -p /data /var/lib/streamsync/state \
    && chown 10001:10001 /data /var/lib/streamsync/state
COPY --from=build /opt/streamsync /opt/streamsync
COPY --from=build /app/schemas /app/schemas
COPY --from=build /app/examples /app/examples
WORKDIR /app
VOLUME ["/var/lib/streamsync/state"]
# The admin endpoint: /metrics, /healthz, /readyz.
EXPOSE 9464
USER 10001:10001
ENTRYPOINT ["streamsync"]
CMD ["--help"]
