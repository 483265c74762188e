# nextword: the HTTP service with a default model trained at build time.
#   docker build -t nextword .
#   docker run -p 8000:8000 nextword                      # serves the built-in model at once
#   docker run -p 8000:8000 -v $PWD/models/mine:/models/mine:ro -e NEXTWORD_MODEL_DIR=/models/mine nextword
# Air-gapped builds: put the wheels in ./wheelhouse (pip wheel --wheel-dir wheelhouse .) and
# they are installed from there, without an index.
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------- build: install, train
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY . /src
# wheels built for another Python than the base image's do not install: then use the index
RUN python3 -m venv /opt/nextword \
 && { /opt/nextword/bin/pip install --no-index --find-links wheelhouse nextword 2>/dev/null \
      || /opt/nextword/bin/pip install /src; } \
 && /opt/nextword/bin/nextword --version
RUN /opt/nextword/bin/nextword train --preset default --out /models/default \
 && rm -rf /models/default/resume

# ---------------------------------------------------------------- runtime: package and model only
FROM ${BASE_IMAGE}
ARG UID=10001
RUN useradd --uid "${UID}" --no-create-home --shell /usr/sbin/nologin nextword
COPY --from=build /opt/nextword /opt/nextword
COPY --from=build --chown=${UID}:${UID} /models /models
ENV PATH=/opt/nextword/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NEXTWORD_MODEL_DIR=/models/default \
    NEXTWORD_HOST=0.0.0.0 \
    NEXTWORD_PORT=8000 \
    NEXTWORD_WORKERS=0
USER ${UID}
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-m", "app.healthcheck", "/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["nextword"]
CMD ["serve"]
