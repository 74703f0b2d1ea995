# Build stage: compile fitd in release mode.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin fitd

# Runtime stage: the binary, CA certificates for dataset downloads, curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/fitd fitd \
    && mkdir -p /var/lib/fitd && chown fitd /var/lib/fitd
COPY --from=build /src/target/release/fitd /usr/local/bin/fitd
USER fitd
ENV FITD_ADDR=0.0.0.0:8080 FITD_DB=/var/lib/fitd/fitd.db
EXPOSE 8080
VOLUME /var/lib/fitd
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["fitd"]
CMD ["serve"]
