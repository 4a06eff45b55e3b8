//! One span and one set of metrics per gRPC call.
//!
//! The span is named `billing.v1.Service/Method` and carries
//! OpenTelemetry's `rpc.*` attributes and the call's status; it continues
//! the caller's trace when the request carries a W3C `traceparent`, and
//! log lines inside it name the trace id. The call is counted by status
//! code (`billing_grpc_requests_total`) and timed
//! (`billing_grpc_request_duration_seconds`) when its status is known: at
//! once for an answer without a body (an error), else when the trailers go
//! out; a stream dropped before them counts as CANCELLED.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prost::Message;
use tonic::Code;
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::instruments::{GRPC_DURATION, GRPC_REQUESTS};

/// The label value of a code: its name in OpenTelemetry's and gRPC's
/// spelling (`INVALID_ARGUMENT`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a code is the server's failure rather than the caller's, as
/// OpenTelemetry's RPC conventions mark server spans as errors.
fn server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// One method's names and instruments.
#[derive(Debug)]
struct Rpc {
    /// `billing.v1.BillingService/UpdateSeatCount`: the span's name.
    name: &'static str,
    service: &'static str,
    method: &'static str,
    /// By status code (0 to 16): made on first use, so only the codes a
    /// method has answered appear.
    by_code: [OnceLock<Counter>; 17],
    duration: Histogram,
}

impl Rpc {
    fn new(name: &'static str) -> Self {
        let (service, method) = name.split_once('/').unwrap_or(("unknown", "unknown"));
        Self {
            name,
            service,
            method,
            by_code: Default::default(),
            duration: metrics::histogram!(GRPC_DURATION, "service" => service, "method" => method),
        }
    }

    fn finished(&self, code: Code, started: Instant) {
        let counter = self.by_code[code as usize].get_or_init(|| {
            metrics::counter!(
                GRPC_REQUESTS,
                "service" => self.service,
                "method" => self.method,
                "code" => code_name(code),
            )
        });
        counter.increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

/// The methods the server knows, by request path. Any other path (a
/// probe, a typo) shares one `unknown` entry, so no caller can add labels.
#[derive(Debug)]
struct RpcTable {
    by_path: HashMap<String, Arc<Rpc>>,
    unknown: Arc<Rpc>,
}

impl RpcTable {
    /// The methods of every service in the encoded descriptor sets.
    fn from_descriptors(sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let name = format!("{package}.{}/{}", service.name(), method.name());
                        // Leaked once per method at start-up: a fixed set
                        // that lives as long as the process.
                        let name: &'static str = Box::leak(name.into_boxed_str());
                        by_path.insert(format!("/{name}"), Arc::new(Rpc::new(name)));
                    }
                }
            }
        }
        Self {
            by_path,
            unknown: Arc::new(Rpc::new("unknown/unknown")),
        }
    }

    fn find(&self, path: &str) -> Arc<Rpc> {
        self.by_path.get(path).unwrap_or(&self.unknown).clone()
    }
}

#[derive(Debug, Clone)]
pub struct ObserveLayer {
    table: Arc<RpcTable>,
}

impl ObserveLayer {
    /// Knows the methods of the services in `descriptor_sets`.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        Self {
            table: Arc::new(RpcTable::from_descriptors(descriptor_sets)),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            table: self.table.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObserveService<S> {
    inner: S,
    table: Arc<RpcTable>,
}

/// Reads `traceparent` and `tracestate` from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

fn call_span<B>(rpc: &Rpc, request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.name = rpc.name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = rpc.service,
        rpc.method = rpc.method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let caller = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let caller_trace = caller.span().span_context().trace_id();
    // Without an OTLP exporter there is no OpenTelemetry layer to adopt
    // the parent; the caller's trace id still goes in the logs.
    let _ = span.set_parent(caller);
    let ours = span.context().span().span_context().trace_id();
    let trace = if ours != opentelemetry::trace::TraceId::INVALID {
        ours
    } else {
        caller_trace
    };
    if trace != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace));
    }
    span
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = self.table.find(request.uri().path());
        let span = call_span(&rpc, &request);
        let started = Instant::now();
        let call = span.in_scope(|| self.inner.call(request));
        let call = call.instrument(span.clone());
        Box::pin(async move {
            let response = call.await?;
            let completion = Completion { rpc, span, started };
            // An answer without a body (trailers only) has its status now;
            // any other has it in its trailers.
            let completion = match status_in(response.headers()) {
                Some(code) => {
                    completion.finish(code);
                    None
                }
                None => Some(completion),
            };
            Ok(response.map(|inner| ObservedBody { inner, completion }))
        })
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let raw = headers.get("grpc-status")?.to_str().ok()?;
    raw.parse::<i32>().ok().map(Code::from_i32)
}

/// What is left to record once the call's status is known.
#[derive(Debug)]
struct Completion {
    rpc: Arc<Rpc>,
    span: tracing::Span,
    started: Instant,
}

impl Completion {
    fn finish(self, code: Code) {
        self.rpc.finished(code, self.started);
        self.span.record("rpc.grpc.status_code", code as i64);
        let _entered = self.span.enter();
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if code == Code::Ok {
            tracing::debug!(latency_ms, "call finished");
        } else if code == Code::Cancelled {
            // The client went away (a CLI closing its reflection stream, a
            // gateway reconnecting): routine, not a failure of ours.
            tracing::debug!(latency_ms, "call cancelled by the client");
        } else {
            if server_fault(code) {
                self.span.record("otel.status_code", "ERROR");
            }
            // Most failures are the caller's (NOT_FOUND, INVALID_ARGUMENT);
            // INTERNAL is logged at ERROR, with its cause, where it is
            // mapped (`grpc::status`).
            tracing::info!(code = code_name(code), latency_ms, "call failed");
        }
    }
}

/// A response body that records the call when its trailers pass.
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    completion: Option<Completion>,
}

impl<B> Body for ObservedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| status_in(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Unknown),
            // The end without trailers: nothing said how the call went.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(done) = this.completion.take()
        {
            done.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // The client went away (or the server stopped) before the end.
        if let Some(done) = self.completion.take() {
            done.finish(Code::Cancelled);
        }
    }
}
