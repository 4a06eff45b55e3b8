//! Member roles and what each may do in its organization.

use super::ids::UserId;
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

/// Why a signed-in user may not read entitlements through the web app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntitlementReadRefusal {
    /// Only members of the organization see its entitlements.
    NotAMember,
    /// A member checks only their own access, never another member's.
    AnotherMembersAccess,
    /// Holding credit is for the gateway, which then reports the usage.
    Reservation,
}

impl EntitlementReadRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAMember => "only members of the organization may read its entitlements",
            Self::AnotherMembersAccess => "a member may check only their own access",
            Self::Reservation => "only the gateway and operators may reserve credits",
        }
    }
}

/// Whether a signed-in user (the BFF's acting user, with `asking_role` in
/// the organization) may read its entitlements, or check `checked_user`'s
/// access (`None` for the organization's entitlements as a whole), placing
/// a credit hold if `reserves`.
pub fn user_may_read_entitlements(
    asking: &UserId,
    asking_role: Option<Role>,
    checked_user: Option<&UserId>,
    reserves: bool,
) -> Result<(), EntitlementReadRefusal> {
    if asking_role.is_none() {
        return Err(EntitlementReadRefusal::NotAMember);
    }
    if checked_user.is_some_and(|checked| checked != asking) {
        return Err(EntitlementReadRefusal::AnotherMembersAccess);
    }
    if reserves {
        return Err(EntitlementReadRefusal::Reservation);
    }
    Ok(())
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

    #[test]
    fn a_signed_in_user_reads_only_their_own_organizations_entitlements() {
        use EntitlementReadRefusal::*;
        let alice = UserId::parse("alice").expect("id");
        let bob = UserId::parse("bob").expect("id");
        let cases = [
            (
                "a member, the organization",
                Some(Member),
                None,
                false,
                Ok(()),
            ),
            (
                "a member, their own access",
                Some(Member),
                Some(&alice),
                false,
                Ok(()),
            ),
            (
                "an owner, their own access",
                Some(Owner),
                Some(&alice),
                false,
                Ok(()),
            ),
            ("not a member", None, None, false, Err(NotAMember)),
            (
                "not a member, their own access",
                None,
                Some(&alice),
                false,
                Err(NotAMember),
            ),
            (
                "another member's access",
                Some(Owner),
                Some(&bob),
                false,
                Err(AnotherMembersAccess),
            ),
            (
                "a reservation",
                Some(Member),
                Some(&alice),
                true,
                Err(Reservation),
            ),
        ];
        for (name, role, checked, reserves, want) in cases {
            assert_eq!(
                user_may_read_entitlements(&alice, role, checked, reserves),
                want,
                "{name}"
            );
        }
    }
}
