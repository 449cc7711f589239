# Production image: gunicorn with uvicorn workers (the `make serve` command), non-root.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    PORT=8000 \
    WORKERS=2

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

COPY . .
RUN useradd --system --uid 10001 --home /app gateway \
    && mkdir -p /data \
    && SECRET_KEY=build-only python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R gateway /data

USER gateway
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)"

# migrate then serve; WORKERS and PORT come from the environment
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn gateway_project.asgi:application -k gateway_project.workers.UvicornWorker --workers ${WORKERS} --bind 0.0.0.0:${PORT} --graceful-timeout 30 --keep-alive 75"]
