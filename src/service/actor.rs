//! Who is asking, as established by the transport's authentication.

use crate::domain::ids::UserId;
use crate::store::erasure::user_actor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An end user, on whose behalf the web frontend's BFF calls.
    User(UserId),
    /// An operator: may do everything, including the operator-only RPCs.
    Operator,
    /// The proxy gateway: entitlement reads only.
    Gateway,
}

impl Actor {
    /// How the actor is named in audit entries.
    pub fn audit_name(&self) -> String {
        match self {
            Self::User(user) => user_actor(user),
            Self::Operator => "operator".to_owned(),
            Self::Gateway => "gateway".to_owned(),
        }
    }

    /// The end user, when the actor is one.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Self::User(user) => Some(user),
            Self::Operator | Self::Gateway => None,
        }
    }
}
