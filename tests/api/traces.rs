//! Traces reach an OTLP collector from the real binary at log level
//! `warn`: the call's span is named `billing.v1.Service/Method`, carries
//! the `rpc.*` attributes and its status, continues the caller's W3C
//! `traceparent`, and holds the Stripe requests and database work it did
//! as child spans. The collector is a tonic server in the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use billing_service::grpc::proto::billing_service_client::BillingServiceClient;
use billing_service::grpc::proto::{self, BillingCycle};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::helpers::{As, request, spawn_app_with_stripe};
use crate::service_process::ServiceProcess;

/// Keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let collector = Collector::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (collector, format!("http://{addr}"))
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

/// Whether `span` descends from `ancestor` through spans in `all`.
fn descends_from(span: &Span, ancestor: &Span, all: &[Span]) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = all
            .iter()
            .find(|s| s.span_id == parent)
            .map(|s| s.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

#[tokio::test]
async fn a_traced_call_is_a_child_of_the_callers_traceparent_with_stripe_and_database_spans() {
    let (collector, endpoint) = start_collector().await;
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("owner-1").await.id;
    let mut replica = ServiceProcess::new(&app, &stripe)
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .with("RUST_LOG", "warn");
    let channel = replica.start().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut checkout = request(
        As::User("owner-1"),
        proto::CreateCheckoutSessionRequest {
            org_id: org,
            plan: "teams".into(),
            billing_cycle: BillingCycle::Monthly.into(),
            seats: 3,
            success_url: "https://app.example.com/billing/done".into(),
            cancel_url: "https://app.example.com/billing".into(),
            ..Default::default()
        },
    );
    checkout.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    BillingServiceClient::new(channel)
        .create_checkout_session(checkout)
        .await
        .expect("checkout");
    // Stopping flushes the exporter.
    let status = replica
        .terminate(Duration::from_secs(30))
        .await
        .expect("exits");
    assert!(status.success(), "{status}");

    let spans = collector.spans.lock().expect("lock").clone();
    let rpc = spans
        .iter()
        .find(|s| s.name == "billing.v1.BillingService/CreateCheckoutSession")
        .unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no RPC span among {names:?}")
        });
    assert_eq!(hex::encode(&rpc.trace_id), trace_id);
    assert_eq!(hex::encode(&rpc.parent_span_id), caller_span);
    assert_eq!(rpc.kind, span::SpanKind::Server as i32);
    assert_eq!(text(rpc, "rpc.system"), "grpc");
    assert_eq!(text(rpc, "rpc.service"), "billing.v1.BillingService");
    assert_eq!(text(rpc, "rpc.method"), "CreateCheckoutSession");
    assert_eq!(
        attribute(rpc, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );

    let stripe_calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == span::SpanKind::Client as i32 && s.name.starts_with("create_"))
        .collect();
    let names: Vec<&str> = stripe_calls.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"create_customer"), "{names:?}");
    assert!(names.contains(&"create_checkout_session"), "{names:?}");
    for call in &stripe_calls {
        assert_eq!(call.trace_id, rpc.trace_id, "{}", call.name);
        assert!(
            descends_from(call, rpc, &spans),
            "{} is not under the call",
            call.name
        );
    }
    let database: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("db ") && s.trace_id == rpc.trace_id)
        .collect();
    assert!(!database.is_empty(), "no database span in the call's trace");
    assert!(database.iter().all(|s| descends_from(s, rpc, &spans)));
}
