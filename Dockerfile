# syntax=docker/dockerfile:1
# Multi-stage build: compile with the committed .sqlx offline data (no
# database needed), then run as a non-root user on a slim image.
#
# Base images are pinned by digest for releases: pass the digests you have
# verified, e.g.
#   docker build \
#     --build-arg BUILD_IMAGE=rust:1.95-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest> .
# (`docker buildx imagetools inspect rust:1.95-bookworm` prints a digest).
# The defaults are tags, which move; they are here so a plain
# `docker build .` works.
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
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

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin billing
COPY --from=build /usr/local/bin/billing-service /usr/local/bin/billing-service
COPY catalogs /etc/billing/catalogs
USER 10001:10001
# gRPC (BillingService, CreditService, EntitlementService, EventService,
# OrgAdminService, health, reflection),
# the Stripe webhook listener (POST /stripe/webhook) and metrics (GET /metrics).
EXPOSE 50051 8080 9464
ENV BILLING_GRPC_ADDR=0.0.0.0:50051 \
    BILLING_WEBHOOK_ADDR=0.0.0.0:8080 \
    BILLING_METRICS_ADDR=0.0.0.0:9464 \
    BILLING_LOG_FORMAT=json \
    BILLING_IN_CONTAINER=true
# Set DATABASE_URL, BILLING_CALLER_TOKENS and STRIPE_WEBHOOK_SECRET when running the container;
# without BILLING_CALLER_TOKENS it refuses to start (BILLING_IN_CONTAINER).
# The binary asks its own gRPC health service (no shell or probe tool in
# the image). Kubernetes ignores HEALTHCHECK and uses its gRPC probes
# (deploy/base/deployment.yaml); the start period covers migrations and
# loading the entitlement state.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/billing-service", "--probe"]
ENTRYPOINT ["/usr/local/bin/billing-service"]
