# The gateway image: the `gateway` binary, plus the demo `echo-upstream` and the `otlp-sink`
# trace receiver that docker-compose.yml uses for its demo upstreams.
#
#   docker build -t gateway:latest .

FROM rust:1.88-bookworm AS build
# etcd-client compiles etcd's protobufs at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway -p tests --bins \
 && mkdir /out \
 && cp target/release/gateway target/release/echo-upstream target/release/otlp-sink /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /examples/
USER gateway
# Proxy, admin, HTTPS proxy (with proxy_listen_tls), gossip.
EXPOSE 8000 8001 8443 7946/udp
HEALTHCHECK --interval=5s --timeout=2s --retries=6 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8001/status || exit 1
CMD ["gateway", "run"]
