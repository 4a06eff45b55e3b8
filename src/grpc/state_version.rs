//! Puts the state version a call committed into its response metadata
//! (`x-billing-state-version`), so a caller can ask a replica for answers at
//! least that new (`min_version`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::service::capture_committed_version;

/// The response metadata key that carries the committed version.
pub const STATE_VERSION_HEADER: &str = "x-billing-state-version";

#[derive(Debug, Clone, Copy, Default)]
pub struct StateVersionLayer;

impl<S> Layer<S> for StateVersionLayer {
    type Service = StateVersionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StateVersionService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct StateVersionService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for StateVersionService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let (result, version) = capture_committed_version(call).await;
            let mut response = result?;
            if let Some(version) = version {
                response
                    .headers_mut()
                    .insert(STATE_VERSION_HEADER, http::HeaderValue::from(version.0));
            }
            Ok(response)
        })
    }
}
