# The mersemi image: the project and its dependencies (CPU torch), used by the Prefect server
# and the worker services of docker-compose.yml.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/mersemi
COPY pyproject.toml README.md ./
COPY flows flows
COPY tasks tasks
COPY models models
COPY storage storage
COPY prefect.yaml ./
RUN pip install --no-cache-dir -e . --extra-index-url https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 DO_NOT_TRACK=1
CMD ["mersemi", "--help"]
