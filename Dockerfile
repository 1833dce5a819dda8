# podcert-signer: a static (musl) binary on distroless/static, running as non-root.
#   docker build -t podcert-signer .
# Not built in this project's CI: its machines have no container engine.
FROM rust:1.89-alpine AS build
RUN apk add --no-cache musl-dev gcc g++ make cmake perl
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p podcert-signer \
 && cp target/release/podcert-signer /podcert-signer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /podcert-signer /podcert-signer
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/podcert-signer"]
