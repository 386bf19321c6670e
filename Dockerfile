# bfstream as a container: `docker build -t bfstream .` then
#   docker run -p 8000:8000 -v bfstream-data:/var/lib/bfstream bfstream
# Settings come as BFSTREAM_* variables; docs/deployment.md has more, and a fleet.
#
# BASE_IMAGE is any Debian-like image with python3 (3.11 or newer) and its venv module: the
# official slim Python image by default, or a plain Debian with python3 and python3-venv.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Installed into a virtual environment of its own, never into the image's Python: Debian's
# refuses pip (PEP 668), and the venv keeps bfstream's packages apart from the system's.
RUN python3 -m venv /opt/bfstream
COPY pyproject.toml README.md /src/
COPY bfstream /src/bfstream
RUN /opt/bfstream/bin/pip install --no-cache-dir --disable-pip-version-check "/src[redis,postgres]" \
    && rm -rf /src

# A user of its own, without a login, owning only the data directory.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bfstream --create-home --shell /usr/sbin/nologin bfstream
VOLUME /var/lib/bfstream

ENV PATH=/opt/bfstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BFSTREAM_DATA_DIR=/var/lib/bfstream \
    BFSTREAM_HOST=0.0.0.0 \
    BFSTREAM_PORT=8000
USER bfstream
WORKDIR /var/lib/bfstream
EXPOSE 8000

# 503 while draining or with the broker down: then the container is unhealthy, as it should be.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BFSTREAM_PORT', '8000'), timeout=2)"]

# bfstream is the container's first process (exec form, no shell in between), so the SIGTERM of
# `docker stop` reaches it: running streams get streams.drain_seconds (20 s) to finish. Give the
# stop at least that long (docker stop -t 30; stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["bfstream"]
CMD ["serve"]
