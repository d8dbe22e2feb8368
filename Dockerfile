# Multi-stage build of the orderflow binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/orderflow /orderflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /orderflow /usr/local/bin/orderflow
COPY config /etc/orderflow
WORKDIR /var/lib/orderflow
EXPOSE 8080
ENTRYPOINT ["orderflow"]
CMD ["serve"]
