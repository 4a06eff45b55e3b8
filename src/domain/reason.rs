//! Why a valid request was refused, in words a program can match on.
//!
//! Each reason is sent as `google.rpc.ErrorInfo.reason` (domain
//! `billing.v1`) with FAILED_PRECONDITION, ALREADY_EXISTS or
//! PERMISSION_DENIED, alongside the message written for people. Reasons are
//! part of the API: they are never renamed or reused, only added. The
//! README's error table lists every one (a test keeps it complete).

use std::fmt;

/// The `ErrorInfo.domain` every reason belongs to.
pub const REASON_DOMAIN: &str = "billing.v1";

macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// A stable refusal reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason {
            $($variant,)*
        }

        impl ErrorReason {
            pub const ALL: &[ErrorReason] = &[$(ErrorReason::$variant,)*];

            /// The name on the wire, in UPPER_SNAKE_CASE as AIP-193 asks.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorReason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    // PERMISSION_DENIED: who is calling may not do this.
    CallerNotPermitted => "CALLER_NOT_PERMITTED",
    NotAMember => "NOT_A_MEMBER",
    RoleNotPermitted => "ROLE_NOT_PERMITTED",
    NotOwnResource => "NOT_OWN_RESOURCE",
    // ALREADY_EXISTS.
    IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
    InstanceSubscribed => "INSTANCE_SUBSCRIBED",
    TrialAlreadyUsed => "TRIAL_ALREADY_USED",
    // FAILED_PRECONDITION: seats.
    SeatsExhausted => "SEATS_EXHAUSTED",
    SeatsInUse => "SEATS_IN_USE",
    PaidSeatRequired => "PAID_SEAT_REQUIRED",
    // Subscriptions and checkout.
    SubscriptionExists => "SUBSCRIPTION_EXISTS",
    CheckoutBeingSetUp => "CHECKOUT_BEING_SET_UP",
    NoSubscription => "NO_SUBSCRIPTION",
    SubscriptionNotEnded => "SUBSCRIPTION_NOT_ENDED",
    PriceNotConfigured => "PRICE_NOT_CONFIGURED",
    PaymentDeclined => "PAYMENT_DECLINED",
    // Billing-cycle changes.
    ScheduleActive => "SCHEDULE_ACTIVE",
    CycleUnchanged => "CYCLE_UNCHANGED",
    NoPendingChange => "NO_PENDING_CHANGE",
    ItemsOnOtherCycle => "ITEMS_ON_OTHER_CYCLE",
    // Credits and usage.
    InsufficientCredits => "INSUFFICIENT_CREDITS",
    CreditsLocked => "CREDITS_LOCKED",
    HoldAlreadySettled => "HOLD_ALREADY_SETTLED",
    // Members and invitations.
    AlreadyAMember => "ALREADY_A_MEMBER",
    InvitationPending => "INVITATION_PENDING",
    InvitationAccepted => "INVITATION_ACCEPTED",
    InvitationRevoked => "INVITATION_REVOKED",
    InvitationExpired => "INVITATION_EXPIRED",
    LastOwner => "LAST_OWNER",
    // Add-on instances.
    NotEntitled => "NOT_ENTITLED",
    AddOnSwitchedOff => "ADD_ON_SWITCHED_OFF",
    SwitchOffNotAllowed => "SWITCH_OFF_NOT_ALLOWED",
    InstanceNotInTrial => "INSTANCE_NOT_IN_TRIAL",
    // Stripe.
    StripeNotConfigured => "STRIPE_NOT_CONFIGURED",
    StripeRefused => "STRIPE_REFUSED",
    CustomerLinkedElsewhere => "CUSTOMER_LINKED_ELSEWHERE",
    AdoptionRefused => "ADOPTION_REFUSED",
    OperationFailed => "OPERATION_FAILED",
    // Lifecycle events.
    EventNotRetained => "EVENT_NOT_RETAINED",
    ReplayTooLarge => "REPLAY_TOO_LARGE",
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal a caller can act on: the reason, a message for people, and
/// the numbers behind it (`ErrorInfo.metadata`, keys in lowerCamelCase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: ErrorReason,
    pub message: String,
    pub metadata: Vec<(&'static str, String)>,
}

impl Refused {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// Adds one number (or name) behind the refusal.
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.metadata.push((key, value.to_string()));
        self
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_reason_has_a_distinct_upper_snake_case_name() {
        let names: HashSet<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), ErrorReason::ALL.len());
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
            assert!(name.len() <= 63, "AIP-193 caps reasons at 63 characters");
        }
    }

    #[test]
    fn the_readme_error_table_lists_every_reason() {
        let readme = include_str!("../../README.md");
        for reason in ErrorReason::ALL {
            let row = format!("| `{}` |", reason.as_str());
            assert!(readme.contains(&row), "README.md has no row for {reason}");
        }
    }

    #[test]
    fn a_refusal_keeps_its_numbers_in_order() {
        let refused = Refused::new(ErrorReason::SeatsExhausted, "no seat is free")
            .with("seatsUsed", 3)
            .with("seatsPaid", 3);
        assert_eq!(refused.to_string(), "no seat is free");
        assert_eq!(
            refused.metadata,
            [("seatsUsed", "3".to_owned()), ("seatsPaid", "3".to_owned())]
        );
    }
}
