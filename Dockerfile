# journey-streams image: the `journey` command (worker, generate, replay, summary).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
# Editable install: the engine and migrations read schemas/ next to the streams package
# (Path(__file__).parents[2]), which a plain `pip install .` would leave behind in /app.
RUN pip install -e . \
    && useradd --create-home --uid 10001 journey \
    && mkdir -p /data && chown journey /data

USER journey
ENV JOURNEY_DATA_DIR=/data
EXPOSE 9464
CMD ["journey", "worker"]
