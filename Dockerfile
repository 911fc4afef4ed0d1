# journey-streams image: the `journey` command (worker, generate, replay, summary).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md /src/
COPY streams /src/streams
COPY schemas /src/schemas
# A regular install, as `pip install .`: the schemas and migrations travel inside the wheel
# as package data (streams/schemas links to schemas/), so the sources are not needed after.
RUN pip install /src \
    && rm -rf /src \
    && useradd --create-home --uid 10001 journey \
    && mkdir -p /data && chown journey /data

USER journey
ENV JOURNEY_DATA_DIR=/data
EXPOSE 9464
CMD ["journey", "worker"]
