# One image for every agentwire role (gateway, archive, analytics, emit, replay): the services
# differ only by arguments. Build from the repository root:
#   docker build -t agentwire .
#   docker run --rm -p 8080:8080 -e AGENTWIRE_BROKERS=... -e AGENTWIRE_JWT_SECRET=... agentwire gateway

FROM debian:12 AS builder
WORKDIR /src
# The package list lives in scripts/bootstrap.sh (--build-only: no test tools); copying the
# script alone first keeps this layer cached until the list changes.
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN bash scripts/bootstrap.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake --preset release -DAGENTWIRE_BUILD_TESTS=OFF \
 && cmake --build --preset release --target agentwire -j "$(nproc)" \
 && strip --strip-debug -o /agentwire build/release/cli/agentwire \
 && /agentwire --version

FROM debian:12-slim AS runtime
# Only the shared libraries the binary links (librdkafka, protobuf, spdlog, fmt, libjwt, OpenSSL,
# libpqxx and its libpq), CA certificates for TLS to Kafka and PostgreSQL, and curl for
# container health checks. tests/infra/validate_compose.py checks this list against the
# libraries a freshly built binary needs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libprotobuf32 libspdlog1.10 libfmt9 libjwt0 libssl3 libpqxx-6.4 libpq5 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 agentwire \
 && useradd --system --uid 10001 --gid agentwire --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agentwire
COPY --from=builder /agentwire /usr/local/bin/agentwire
# The demo page is compiled into the binary; this copy is for operators who want to serve a
# customised one (the gateway's web directory option).
COPY gateway/web/ /usr/share/agentwire/web/
# Fail the build, not the deploy, when a runtime library is missing.
RUN if ldd /usr/local/bin/agentwire | grep 'not found'; then exit 1; fi \
 && agentwire --version

# Containers listen on all interfaces (the binary defaults to 127.0.0.1 for local runs) and
# log JSON; Cloud Run sets PORT itself.
ENV AGENTWIRE_LISTEN=0.0.0.0 \
    PORT=8080 \
    AGENTWIRE_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["agentwire"]
CMD ["--help"]
