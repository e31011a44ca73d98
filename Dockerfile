# syntax=docker/dockerfile:1
# Pulse: one image for every process type (pulse web, ingest, evaluate, escalate, deliver, schedule, migrate,
# simulate); the command picks one. Build from the repository root:  docker build -t pulse .
# deploy/docker-compose.yml builds it and runs each process type as a service.

# --- 1. The web app (spa/): static files that pulse web serves at /app --------------------------------------------
FROM node:22-bookworm-slim AS spa
WORKDIR /src/spa
COPY spa/package.json spa/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY spa/ ./
RUN npm run build

# --- 2. Pulse and its dependencies in a virtualenv ----------------------------------------------------------------
FROM python:3.11-slim-bookworm AS python
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
# The dependencies first, in a layer of their own that code changes do not rebuild.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY alembic.ini ./
COPY migrations/ migrations/
COPY pulse/ pulse/
# Installed in place (editable), as in a checkout: `pulse migrate` finds alembic.ini and migrations/ next to the
# package, and `pulse web` the built app in spa/dist.
RUN pip install --no-deps -e . && python -m compileall -q pulse

# --- 3. Runtime: no compilers, no node, an unprivileged user ------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin pulse
COPY --from=python /opt/venv /opt/venv
COPY --from=python /app /app
COPY --from=spa /src/spa/dist /app/spa/dist
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PULSE_ENV=production \
    PULSE_LOG_FORMAT=json \
    PULSE_HTTP_HOST=0.0.0.0 \
    PULSE_HEALTH_HOST=0.0.0.0
WORKDIR /app
USER pulse
# pulse web on 8080; the workers' health, readiness and metrics on 9101 (ingest) ... 9105 (schedule)
EXPOSE 8080 9101 9102 9103 9104 9105
CMD ["pulse", "web"]
