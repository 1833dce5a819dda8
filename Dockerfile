# podcert-signer on distroless/cc (glibc, libgcc, libstdc++), running as non-root. The binary is
# linked against glibc, not static musl, so it can dlopen a PKCS#11 module (an HSM vendor's
# library, mounted or in a derived image) for root keys in a token (docs/ca-lifecycle.md).
#   docker build -t podcert-signer .
# This project's CI has no container engine: it lints this file with hadolint and runs the HSM
# end-to-end test on the binary scripts/build-release makes, the command the build stage runs.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release && cp target/release/podcert-signer /podcert-signer

# The same Debian release as the build stage, so the binary finds the glibc it was linked to.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /podcert-signer /podcert-signer
USER 65532:65532
EXPOSE 8080 9443
ENTRYPOINT ["/podcert-signer"]
