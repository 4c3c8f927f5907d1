# A slim image of the gateway: `gateway run` as a non-root user, health-checked on /_gateway/health.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_ROUTES_FILE=/etc/gateway/routes.yaml

WORKDIR /opt/gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY middleware ./middleware
COPY flags ./flags
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home gateway

COPY examples/routes.yaml /etc/gateway/routes.yaml

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2)"]
ENTRYPOINT ["gateway", "run"]
