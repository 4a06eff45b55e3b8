//! Load shedding: a cap on calls in flight, per class of call. A call over
//! its cap is answered RESOURCE_EXHAUSTED at once instead of queueing into
//! a timeout. The gateway's entitlement calls have a cap of their own, so
//! slow billing calls (waiting on Stripe or the database) can never starve
//! `CheckEntitlement`; health checks have a small one of their own too, so
//! a flood of checks never makes a probe answer RESOURCE_EXHAUSTED (and a
//! flood of probes never sheds checks).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::error::Error;
use crate::instruments::LOAD_SHED;

/// Calls in flight allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// `billing.v1.EntitlementService`: the gateway's hot path.
    pub entitlement: usize,
    /// `grpc.health.v1.Health`: probes. A handful at a time is plenty.
    pub health: usize,
    /// Everything else (billing, credits, administration, reflection).
    pub other: usize,
}

impl Default for ConcurrencyLimits {
    fn default() -> Self {
        Self {
            entitlement: 4096,
            health: 64,
            other: 256,
        }
    }
}

const ENTITLEMENT_PREFIX: &str = "/billing.v1.EntitlementService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    entitlement: Arc<Semaphore>,
    health: Arc<Semaphore>,
    other: Arc<Semaphore>,
}

impl LoadShedLayer {
    pub fn new(limits: ConcurrencyLimits) -> Self {
        Self {
            entitlement: Arc::new(Semaphore::new(limits.entitlement)),
            health: Arc::new(Semaphore::new(limits.health)),
            other: Arc::new(Semaphore::new(limits.other)),
        }
    }

    /// The cap a call counts against, by its path, and the class's name.
    fn class_of(&self, path: &str) -> (&Arc<Semaphore>, &'static str) {
        if path.starts_with(ENTITLEMENT_PREFIX) {
            (&self.entitlement, "entitlement")
        } else if path.starts_with(HEALTH_PREFIX) {
            (&self.health, "health")
        } else {
            (&self.other, "other")
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    limits: LoadShedLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (class, name) = self.limits.class_of(request.uri().path());
        let Ok(permit) = class.clone().try_acquire_owned() else {
            metrics::counter!(LOAD_SHED, "class" => name).increment(1);
            let overloaded = tonic::Status::from(Error::Overloaded(
                "the service is at its limit of calls in flight; retry with backoff".into(),
            ));
            return Box::pin(std::future::ready(Ok(overloaded.into_http())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(permit);
            response
        })
    }
}
