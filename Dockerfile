# One image for the operator and the engine pods: the `clustersync` binary, nothing else.
#   docker build -t ghcr.io/clustersync/clustersync:0.1.0 .
# Runs as the distroless "nonroot" user (65532); needs no writable filesystem.

# The builder's Rust is Cargo.toml's rust-version, the oldest that builds Cargo.lock's
# dependencies (tests/install.rs checks the three agree), so every image build also proves
# the declared minimum.
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/clustersync \
    && mkdir /out && cp target/release/clustersync /out/clustersync \
    && ln -s clustersync /out/mongosync

FROM gcr.io/distroless/cc-debian12:nonroot
# /clustersync, and /mongosync (a symlink: invoked by that name, the binary is the engine with
# mongosync's command line, so mongosync's runbooks run as written).
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 27182 8080
ENTRYPOINT ["/clustersync"]
CMD ["--help"]
