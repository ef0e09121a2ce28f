# The one Baton image: `baton ingress | worker | operator` (and the dev/config tools).
#   docker build -t REGISTRY/baton:0.1.0 .
# Multi-stage: build the release binary with the pinned toolchain (rust-version 1.95 in
# Cargo.toml), then copy it into a distroless runtime that runs as the nonroot user (65532).
# The binary links glibc only (TLS is rustls/ring), so distroless/cc is enough.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p baton \
 && install -D -m 0755 target/release/baton /out/baton

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/baton /usr/local/bin/baton
USER 65532:65532
# SMTP listeners on unprivileged ports (the Helm chart maps 25/587/465 onto them) and metrics.
EXPOSE 2525 2587 2465 9090
ENTRYPOINT ["/usr/local/bin/baton"]
CMD ["--help"]
