# syntax=docker/dockerfile:1
# Multi-stage build: compile with the committed .sqlx offline data (no
# database needed), then run as a non-root user on a slim image.

FROM rust:1.95-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY migrations migrations
COPY catalogs catalogs
COPY .sqlx .sqlx
COPY src src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin billing-service \
 && cp target/release/billing-service /usr/local/bin/billing-service

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin billing
COPY --from=build /usr/local/bin/billing-service /usr/local/bin/billing-service
COPY catalogs /etc/billing/catalogs
USER 10001:10001
# gRPC (BillingService, EntitlementService, OrgAdminService, health, reflection)
# and the Stripe webhook listener (POST /stripe/webhook).
EXPOSE 50051 8080
ENV BILLING_GRPC_ADDR=0.0.0.0:50051 \
    BILLING_WEBHOOK_ADDR=0.0.0.0:8080 \
    BILLING_LOG_FORMAT=json \
    BILLING_IN_CONTAINER=true
# Set DATABASE_URL, BILLING_CALLER_TOKENS and STRIPE_WEBHOOK_SECRET when running the container;
# without BILLING_CALLER_TOKENS it refuses to start (BILLING_IN_CONTAINER).
ENTRYPOINT ["/usr/local/bin/billing-service"]
