//! Member roles and what each may do in its organization.

use super::{InvalidValue, quoted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    BillingManager,
    Member,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "owner" => Ok(Self::Owner),
            "billing_manager" => Ok(Self::BillingManager),
            "member" => Ok(Self::Member),
            other => Err(InvalidValue::new(format!(
                "{} is not a role",
                quoted(other)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::BillingManager => "billing_manager",
            Self::Member => "member",
        }
    }

    /// Billing managers administer payment; they do not use the product, so
    /// they take no seat.
    pub fn takes_seat(self) -> bool {
        match self {
            Self::Owner | Self::Member => true,
            Self::BillingManager => false,
        }
    }

    /// Whether a member with this role may perform `action`.
    pub fn permits(self, action: OrgAction) -> bool {
        match action {
            OrgAction::View => true,
            OrgAction::ManageBilling | OrgAction::ViewAuditTrail | OrgAction::RevokeInvitation => {
                matches!(self, Self::Owner | Self::BillingManager)
            }
            // A billing manager may add people who pay or use seats, but
            // only an owner may create another owner.
            OrgAction::Invite(invited) => match self {
                Self::Owner => true,
                Self::BillingManager => invited != Self::Owner,
                Self::Member => false,
            },
            OrgAction::ChangeRoles
            | OrgAction::RemoveMembers
            | OrgAction::SetModelRestrictions
            | OrgAction::SetInstancePolicy
            | OrgAction::DeleteOrganization => self == Self::Owner,
        }
    }
}

/// Things a member can ask to do within an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgAction {
    /// Read the organization, its members, seats and subscription.
    View,
    /// Checkout, seats, billing cycle, cancellation.
    ManageBilling,
    ViewAuditTrail,
    Invite(Role),
    RevokeInvitation,
    ChangeRoles,
    RemoveMembers,
    SetModelRestrictions,
    /// Switch credit-funded add-on instances off or on.
    SetInstancePolicy,
    DeleteOrganization,
}

impl OrgAction {
    /// Words for an error message: "may not {describe}".
    pub fn describe(self) -> &'static str {
        match self {
            Self::View => "view this organization",
            Self::ManageBilling => "manage billing",
            Self::ViewAuditTrail => "view the audit trail",
            Self::Invite(Role::Owner) => "invite owners",
            Self::Invite(Role::BillingManager | Role::Member) => "invite members",
            Self::RevokeInvitation => "revoke invitations",
            Self::ChangeRoles => "change member roles",
            Self::RemoveMembers => "remove members",
            Self::SetModelRestrictions => "set model restrictions",
            Self::SetInstancePolicy => "switch add-on instances off or on",
            Self::DeleteOrganization => "delete the organization",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OrgAction::*, Role::*, *};

    #[test]
    fn permission_table() {
        // (action, owner, billing manager, member)
        let table = [
            (View, true, true, true),
            (ManageBilling, true, true, false),
            (ViewAuditTrail, true, true, false),
            (Invite(Member), true, true, false),
            (Invite(BillingManager), true, true, false),
            (Invite(Owner), true, false, false),
            (RevokeInvitation, true, true, false),
            (ChangeRoles, true, false, false),
            (RemoveMembers, true, false, false),
            (SetModelRestrictions, true, false, false),
            (SetInstancePolicy, true, false, false),
            (DeleteOrganization, true, false, false),
        ];
        for (action, owner, billing_manager, member) in table {
            assert_eq!(Owner.permits(action), owner, "owner {action:?}");
            assert_eq!(
                BillingManager.permits(action),
                billing_manager,
                "bm {action:?}"
            );
            assert_eq!(Member.permits(action), member, "member {action:?}");
        }
    }

    #[test]
    fn billing_managers_take_no_seat() {
        assert!(Owner.takes_seat());
        assert!(Member.takes_seat());
        assert!(!BillingManager.takes_seat());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Owner, BillingManager, Member] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("admin").is_err());
    }
}
