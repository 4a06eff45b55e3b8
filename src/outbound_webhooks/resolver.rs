//! Name resolution that drops every address the policy does not permit, so
//! a name that resolves (or is re-pointed) to a private address is never
//! connected to.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use crate::domain::webhooks::AddressPolicy;

#[derive(Debug, Clone, Copy)]
pub(super) struct GuardedResolver {
    policy: AddressPolicy,
}

impl GuardedResolver {
    pub(super) fn new(policy: AddressPolicy) -> Self {
        Self { policy }
    }
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if permitted.is_empty() && !found.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the name resolves only to loopback, private or reserved addresses",
                ));
            }
            Ok(permitted.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_name_resolving_only_to_loopback_is_refused_unless_private_targets_are_allowed() {
        let name = Name::from_str("localhost").expect("a name");
        let strict = GuardedResolver::new(AddressPolicy::default());
        let refused = strict.oneshot(name.clone()).await.expect_err("refused");
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        let open = GuardedResolver::new(AddressPolicy {
            allow_private: true,
        });
        let found: Vec<SocketAddr> = open.oneshot(name).await.expect("resolved").collect();
        assert!(
            found.iter().all(|addr| addr.ip().is_loopback()),
            "{found:?}"
        );
        assert!(!found.is_empty());
    }
}
