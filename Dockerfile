# streamsync: `docker build -t streamsync .`, then `docker run streamsync --help`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMSYNC_HOME=/app

WORKDIR /app
# .dockerignore keeps the virtualenv, caches and git history out of the context.
COPY . /app
# Installed as root into site-packages; the code runs as an unprivileged user that cannot
# modify it.
RUN pip install /app \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin streamsync \
    && mkdir /data && chown streamsync /data
# /data is owned by the user so a named volume mounted there (compose's demo-data) is
# writable: Docker copies the image directory's ownership into a new volume.

USER streamsync
ENTRYPOINT ["streamsync"]
CMD ["--help"]
