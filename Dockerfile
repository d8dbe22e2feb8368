# Multi-stage build of the orderflow binary: docker build -t orderflow .
# The image runs `orderflow serve` as an unprivileged user, on 0.0.0.0:8080, with its data folder (the embedded
# profile's databases, a generated JWT secret, the instance id) in the volume /var/lib/orderflow.

# ---- 1. The manifests alone, with stub sources: the dependency layer below is rebuilt only when they change.
# Every Cargo.toml of the context (the package, and workspace members such as bench/ when there are some), the
# lock file, an empty lib and main per package, and a stub for each target path a manifest names.
FROM rust:1.95-bookworm AS manifests
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /out; cp Cargo.lock /out/; \
    find . -name Cargo.toml -not -path './target/*' -not -path '*/target/*' -not -path './.services/*' | \
    while read -r manifest; do \
      dir=$(dirname "$manifest"); mkdir -p "/out/$dir/src"; cp "$manifest" "/out/$dir/"; \
      : > "/out/$dir/src/lib.rs"; echo 'fn main() {}' > "/out/$dir/src/main.rs"; \
      sed -n 's/^path *= *"\(.*\.rs\)".*/\1/p' "$manifest" | while read -r target; do \
        mkdir -p "/out/$dir/$(dirname "$target")"; echo 'fn main() {}' > "/out/$dir/$target"; \
      done; \
    done

# ---- 2. Dependencies, cached, then the real sources.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY --from=manifests /out/ ./
RUN cargo build --release --locked --bin orderflow
COPY . .
# The real sources may be older than the stub build's outputs: make cargo see them as changed.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin orderflow \
    && cp target/release/orderflow /orderflow

# ---- 3. The runtime image.
FROM debian:bookworm-slim
# curl for the HEALTHCHECK.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 orderflow \
    && useradd --system --uid 10001 --gid orderflow --home-dir /var/lib/orderflow --shell /usr/sbin/nologin orderflow \
    && mkdir -p /var/lib/orderflow && chown orderflow:orderflow /var/lib/orderflow
COPY --from=build /orderflow /usr/local/bin/orderflow
COPY config /etc/orderflow
ENV ORDERFLOW__SERVER__HOST=0.0.0.0 \
    ORDERFLOW__DATA_DIR=/var/lib/orderflow
WORKDIR /var/lib/orderflow
VOLUME ["/var/lib/orderflow"]
USER 10001:10001
EXPOSE 8080
# Liveness: the process serves HTTP. (docker-compose.yml checks readiness, /health/ready, instead.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["orderflow"]
CMD ["serve"]
