//! Assembles the service from settings: database, migrations, the use cases,
//! the gRPC server and the Stripe webhook listener. `build` binds both ports
//! (port 0 works, for tests) and `run_until_stopped` serves until the
//! shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgListener};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::domain::catalog::Catalog;
use crate::grpc::proto::billing_service_server::BillingServiceServer;
use crate::grpc::proto::credit_service_server::CreditServiceServer;
use crate::grpc::proto::entitlement_service_server::EntitlementServiceServer;
use crate::grpc::proto::event_service_server::EventServiceServer;
use crate::grpc::proto::org_admin_service_server::OrgAdminServiceServer;
use crate::grpc::{
    self, Authenticator, BillingApi, CallerTokens, ConcurrencyLimits, CreditApi, EntitlementApi,
    EventApi, LoadShedLayer, ObserveLayer, OrgAdminApi, Scope, StateVersionLayer,
};
use crate::http_listener::{self, ListenerLimits};
use crate::service::{self, Clock, EntitlementCache, Service, SystemClock};
use crate::store::{self, Store};
use crate::stripe::{StripeApi, StripeSettings, WebhookSecrets, webhook_router};
use crate::transport;
use crate::worker::{BackgroundLoops, InboxSettings, MaintenanceSettings};
use crate::{instruments, metrics_listener};

/// Everything `App::build` needs, already resolved.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub grpc_addr: SocketAddr,
    pub webhook_addr: SocketAddr,
    /// Where `/metrics` is served; `None` turns metrics off.
    pub metrics_addr: Option<SocketAddr>,
    pub webhook_secrets: WebhookSecrets,
    pub database: PgConnectOptions,
    pub database_max_connections: u32,
    pub caller_tokens: CallerTokens,
    pub catalog: Catalog,
    pub service: service::Settings,
    /// `None` runs without Stripe: the Stripe-backed RPCs answer
    /// FAILED_PRECONDITION "Stripe is not configured".
    pub stripe: Option<StripeSettings>,
    pub inbox: InboxSettings,
    pub maintenance: MaintenanceSettings,
    pub limits: ConcurrencyLimits,
    pub webhook_limits: ListenerLimits,
    /// How long, after the stop signal, calls and connections may take to
    /// finish before the servers stop waiting for them.
    pub shutdown_grace: Duration,
    /// `None` reads the system clock; tests pass one they can move.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Names of the served services, for health reporting.
const SERVICE_NAMES: [&str; 5] = [
    "billing.v1.BillingService",
    "billing.v1.CreditService",
    "billing.v1.EntitlementService",
    "billing.v1.EventService",
    "billing.v1.OrgAdminService",
];

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    webhook_listener: TcpListener,
    webhook_addr: SocketAddr,
    webhook: axum::Router,
    /// The metrics listener and the recorder it renders, when enabled.
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
    /// Wakes the inbox worker when the ingress stores an event.
    stored_events: Arc<Notify>,
    inbox: InboxSettings,
    maintenance: MaintenanceSettings,
    /// The connection listening for entitlement changes since the load.
    listening: PgListener,
    limits: ConcurrencyLimits,
    webhook_limits: ListenerLimits,
    service: Service,
    authenticator: Authenticator,
    shutdown_grace: Duration,
}

impl App {
    /// Connects to the database, applies migrations and binds the ports.
    pub async fn build(settings: AppSettings) -> anyhow::Result<Self> {
        let store = Store::connect(settings.database, settings.database_max_connections)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("applying migrations")?;
        let listener = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("binding {}", settings.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let webhook_listener = TcpListener::bind(settings.webhook_addr)
            .await
            .with_context(|| format!("binding {}", settings.webhook_addr))?;
        let webhook_addr = webhook_listener.local_addr()?;
        // The recorder goes in before anything records, so no early
        // instrument is a no-op.
        let metrics = match settings.metrics_addr {
            None => None,
            Some(addr) => {
                let handle = instruments::install().context("installing the metrics recorder")?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                Some((listener, handle))
            }
        };
        let stored_events = Arc::new(Notify::new());
        let webhook = webhook_router(
            store.clone(),
            settings.webhook_secrets,
            stored_events.clone(),
        );
        let stripe = settings
            .stripe
            .as_ref()
            .map(StripeApi::new)
            .transpose()
            .context("configuring the Stripe client")?;
        let clock = settings.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // Listening starts before the load, so no change falls in between.
        let listening = store::entitlement_versions::listen(&store)
            .await
            .context("listening for entitlement changes")?;
        let cache =
            EntitlementCache::load(&store, clock.now(), settings.service.watch_log_capacity)
                .await
                .context("loading the entitlement state")?;
        tracing::info!(organizations = cache.len(), "entitlement state loaded");
        let service = Service::new(
            store,
            settings.catalog,
            clock,
            settings.service,
            stripe,
            Arc::new(cache),
        );
        Ok(Self {
            listener,
            grpc_addr,
            webhook_listener,
            webhook_addr,
            webhook,
            metrics,
            stored_events,
            inbox: settings.inbox,
            maintenance: settings.maintenance,
            listening,
            limits: settings.limits,
            webhook_limits: settings.webhook_limits,
            service,
            authenticator: Authenticator::new(&settings.caller_tokens),
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The use cases, for embedding (tests read the cache's watermark).
    pub fn service(&self) -> &Service {
        &self.service
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    /// Where `/metrics` is served, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves gRPC and webhooks until `shutdown` completes, then finishes
    /// in-flight calls on both.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let loops = BackgroundLoops::start(
            &self.service,
            self.inbox,
            self.maintenance,
            self.stored_events.clone(),
            self.listening,
            &stopped,
        );

        // Watch streams end with UNAVAILABLE once shutdown has begun: they
        // never finish on their own, and the drain waits for every open
        // stream. Sent after health turns NOT_SERVING (below).
        let (end_watches, watches_end) = tokio::sync::watch::channel(false);
        let wait_for_stop = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };

        tracing::info!(addr = %self.webhook_addr, "serving Stripe webhooks");
        let webhooks = http_listener::serve(
            self.webhook_listener,
            self.webhook,
            self.webhook_limits,
            wait_for_stop(),
        );

        let metrics = self.metrics.map(|(listener, handle)| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving metrics at /metrics");
            }
            let service = self.service.clone();
            tokio::spawn(metrics_listener::serve(
                listener,
                handle,
                service,
                wait_for_stop(),
            ))
        });

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let auth = self.authenticator;
        let gate = move |allowed: &'static [Scope]| {
            let auth = auth.clone();
            move |mut request: Request<()>| -> Result<Request<()>, Status> {
                auth.check(&mut request, allowed)?;
                Ok(request)
            }
        };
        let service = self.service;

        tracing::info!(addr = %self.grpc_addr, "serving gRPC");
        let incoming = transport::incoming(self.listener);
        let grpc = transport::server()
            // One span per call (continuing the caller's trace), counted
            // and timed by method and status; outermost, so that shed calls
            // are counted too.
            .layer(ObserveLayer::new(&[
                grpc::proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ]))
            // The state version a call committed goes back in its metadata.
            .layer(StateVersionLayer)
            // Over the cap of calls in flight, answer RESOURCE_EXHAUSTED at once;
            // entitlement checks have their own cap, so billing cannot starve them.
            .layer(LoadShedLayer::new(self.limits))
            // Health and reflection are open: probes and CLIs must reach them
            // without a token, and they reveal only the public schema.
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            // The BFF reads a member's own entitlements; every other
            // entitlement call refuses signed-in users in the service.
            .add_service(EntitlementServiceServer::with_interceptor(
                EntitlementApi::new(service.clone(), watches_end.clone()),
                gate(&[Scope::Gateway, Scope::Bff, Scope::Ops]),
            ))
            .add_service(BillingServiceServer::with_interceptor(
                BillingApi::new(service.clone()),
                gate(&[Scope::Bff, Scope::Ops]),
            ))
            .add_service(CreditServiceServer::with_interceptor(
                CreditApi::new(service.clone()),
                gate(&[Scope::Bff, Scope::Ops]),
            ))
            .add_service(OrgAdminServiceServer::with_interceptor(
                OrgAdminApi::new(service.clone()),
                gate(&[Scope::Bff, Scope::Ops]),
            ))
            // Webhook endpoints and the event stream are the operators'.
            .add_service(EventServiceServer::with_interceptor(
                EventApi::new(service, watches_end.clone()),
                gate(&[Scope::Ops]),
            ))
            .serve_with_incoming_shutdown(incoming, async {
                wait_for_stop().await;
                tracing::info!("shutting down: finishing in-flight calls");
                for name in SERVICE_NAMES {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                // Readiness first, then the streams: a gateway that
                // reconnects is sent to a replica that is still serving.
                let _ = end_watches.send(true);
            });
        let grace = self.shutdown_grace;
        let servers = async { tokio::join!(grpc, webhooks).0 };
        let overdue = async {
            wait_for_stop().await;
            tokio::time::sleep(grace).await;
        };
        let grpc = tokio::select! {
            served = servers => served,
            () = overdue => {
                tracing::warn!(grace_ms = grace.as_millis(), "calls still open after the shutdown grace period; stopping without them");
                Ok(())
            }
        };
        if let Some(metrics) = metrics {
            metrics.await.context("the metrics listener panicked")?;
        }
        loops.join().await?;
        grpc.context("serving gRPC")?;
        Ok(())
    }
}
