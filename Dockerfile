# syntax=docker/dockerfile:1
# csr-signer container image: build in the official Rust image, run on distroless as a non-root user.
#   docker build -t csr-signer:0.1.0 .
# The Helm chart passes its own args (run --config /etc/csr-signer/config.yaml --log-format json).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# vendored-openssl links a current OpenSSL 3.x statically (built by openssl-src, needs perl and make, both
# in the Rust image), so the runtime image needs nothing but glibc and libgcc.
ARG CARGO_FEATURES=vendored-openssl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin csr-signer --no-default-features --features "${CARGO_FEATURES}" \
 && install -D -m 0755 target/release/csr-signer /out/csr-signer

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/csr-signer /csr-signer
# distroless "nonroot" is UID/GID 65532; the chart's securityContext uses the same numbers.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/csr-signer"]
CMD ["run", "--config", "/etc/csr-signer/config.yaml", "--log-format", "json"]
