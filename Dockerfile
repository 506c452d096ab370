# fanout-bridge container image.
#
#   docker build -t fanout-bridge:local .
#   docker run --rm fanout-bridge:local --help
#
# Stage 1 builds a release binary with the Rust toolchain; stage 2 is a
# distroless image (glibc, libgcc, CA certificates, no shell) running as the
# unprivileged user 65532 ("nonroot").
#
# No HEALTHCHECK: the runtime image has no shell or curl to run one. Probe
# GET /healthz and /readyz on port 9464 from outside instead (Kubernetes
# probes, Prometheus `up`).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

############################ builder ############################
FROM ${RUST_IMAGE} AS builder

WORKDIR /build

# Strip symbols from the release binary without touching Cargo.toml.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1) Dependency layer: build every dependency against stand-in sources.
#    This layer is reused as long as Cargo.toml and Cargo.lock do not change.
#    Every target the manifest names ([[bin]], [[test]], [[bench]],
#    [[example]]) gets a stand-in file, because cargo refuses a manifest whose
#    target files are missing; only src/ is replaced by the real thing below,
#    the others are never built by `cargo build --release`.
COPY Cargo.toml Cargo.lock ./
# The vendored crates that Cargo.toml's [patch.crates-io] points at.
COPY patches ./patches
RUN set -eu; \
    mkdir -p src; \
    : > src/lib.rs; \
    for f in src/main.rs $(awk ' \
        function flush() { if (kind != "") { if (path == "") path = dir[kind] "/" name ".rs"; print path } kind = ""; name = ""; path = "" } \
        BEGIN { dir["bin"] = "src/bin"; dir["test"] = "tests"; dir["bench"] = "benches"; dir["example"] = "examples" } \
        /^[ \t]*\[\[(bin|test|bench|example)\]\][ \t]*$/ { flush(); kind = $0; gsub(/[][ \t]/, "", kind); next } \
        /^[ \t]*\[/ { flush(); next } \
        kind != "" && /^[ \t]*name[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*$/, "", v); name = v } \
        kind != "" && /^[ \t]*path[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*"/, "", v); sub(/".*$/, "", v); path = v } \
        END { flush() }' Cargo.toml); do \
      mkdir -p "$(dirname "$f")"; \
      [ -e "$f" ] || echo 'fn main() {}' > "$f"; \
    done; \
    cargo build --release --locked; \
    rm -rf src \
           target/release/fanout-bridge \
           target/release/deps/fanout_bridge-* \
           target/release/deps/libfanout_bridge-* \
           target/release/.fingerprint/fanout-bridge-*

# 2) The real sources. `touch` makes sure cargo sees them as newer than the
#    stand-ins whatever timestamps the build context carried. (Only src/ is
#    needed; a build.rs, if one is ever added, needs its own COPY.)
COPY src ./src
RUN find src -type f -exec touch {} + \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/fanout-bridge /out/fanout-bridge \
 && /out/fanout-bridge --help > /dev/null

############################ runtime ############################
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="fanout-bridge" \
      org.opencontainers.image.description="Consumes JSON messages from RabbitMQ and fans each out to two HTTP APIs; acks when both accepted, dead-letters otherwise." \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=builder /out/fanout-bridge /usr/local/bin/fanout-bridge

# distroless ":nonroot" already defaults to this user; stated explicitly so
# that Kubernetes `runAsNonRoot` can verify a numeric UID.
USER 65532:65532

ENV BRIDGE_METRICS_ADDR=0.0.0.0:9464
# /metrics, /healthz, /readyz
EXPOSE 9464

# SIGTERM: stop consuming, drain in-flight messages for
# BRIDGE_SHUTDOWN_GRACE_MS (default 30 s), exit 0. Give the container a stop
# timeout longer than that (docker stop -t 45, compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/fanout-bridge"]
CMD ["run"]
