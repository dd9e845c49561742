# syntax=docker/dockerfile:1
# Build: dependencies are compiled in their own layer, so editing src/ rebuilds only the crate.
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /app
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY .cargo .cargo
# Cargo reads every target the manifest declares, so the bench targets need stub files too.
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs benches/webhook.rs benches/provider.rs \
 && cargo build --release --locked --bin pipedrive-whatsapp \
 && rm -rf src
COPY .sqlx .sqlx
COPY migrations migrations
COPY manifests manifests
COPY static static
COPY src src
# Make sure cargo sees the real sources as newer than the dependency-layer stubs.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin pipedrive-whatsapp

# Runtime: the binary alone (migrations, manifests and static files are compiled into it).
FROM docker.io/library/debian:bookworm-slim
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /app/target/release/pipedrive-whatsapp /usr/local/bin/pipedrive-whatsapp
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["pipedrive-whatsapp", "healthcheck"]
ENTRYPOINT ["pipedrive-whatsapp"]
CMD ["serve"]
