# syntax=docker/dockerfile:1
# The standalone server (`serve`, an example of this workspace) in a slim image.
#   docker build -t todo-backend .
#   docker run -p 8080:8080 -v todo-data:/data todo-backend
# Settings are environment variables (see .env.example or `docker run todo-backend --help`).

FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY . .
# Registry and git caches survive between builds; the binary is copied out of target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked --example serve \
    && install -D target/release/examples/serve /out/serve

FROM debian:bookworm-slim AS runtime
# No TLS or SQLite libraries are needed: rustls with its own roots, SQLite bundled.
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home todo
COPY --from=build /out/serve /usr/local/bin/serve
USER 10001:10001
WORKDIR /data
# Listen on every interface of the container; with no DATABASE_URL, tasks go to a SQLite file
# in the /data volume (and, with no JWT setting, the development secret beside it).
ENV TODO_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/todo.db \
    TODO_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/data"]
# The image has no curl or wget: the binary asks its own /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["serve", "healthcheck"]
ENTRYPOINT ["serve"]
CMD ["serve"]
