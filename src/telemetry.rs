//! Structured logs through `tracing`, and OTLP trace export when an endpoint
//! is configured.
//!
//! The two have filters of their own. Logs follow `RUST_LOG` (default
//! `info`). Traces are exported whatever the log level: every span of this
//! service down to debug (each call, each Stripe request, each database
//! function) and its events from info up, plus warnings from anything.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Flushes exported spans when dropped at the end of `main`.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {error}");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`,
/// without PostgreSQL's notices such as "relation already exists, skipping").
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Logs go to stderr so stdout stays for what the run command prints
    // for people; colours only when a person is watching.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .context("building the OTLP span exporter")?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("billing-service")
                            .build(),
                    )
                    .build(),
            )
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("billing-service"))
            .with_filter(exported())
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// What goes to the trace exporter, independent of `RUST_LOG`.
fn exported() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| {
        let ours = meta.target().starts_with(env!("CARGO_CRATE_NAME"));
        let level = *meta.level();
        if meta.is_span() {
            ours && level <= Level::DEBUG
        } else {
            (ours && level <= Level::INFO) || level <= Level::WARN
        }
    })
}
