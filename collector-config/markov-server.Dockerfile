# The reference Markov backend (mkv serve) for docker-compose.yml. Build context: the repo root.
FROM python:3.11.10-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY markov_otel ./markov_otel
RUN pip install "/src[server]" && useradd --system --uid 10001 markov

USER markov
EXPOSE 8470
# docker-compose.yml passes --db postgresql://...; MARKOV_SERVER_TOKENS comes from the environment.
CMD ["mkv", "serve", "--host", "0.0.0.0", "--port", "8470"]
