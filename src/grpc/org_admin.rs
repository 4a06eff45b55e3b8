//! `billing.v1.OrgAdminService`: organizations, members, invitations and
//! operator overrides.

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::auth::actor;
use super::convert::{self, org_id, page_size, parse_role, parse_timestamp, user_id};
use super::proto::{self, org_admin_service_server::OrgAdminService};
use crate::domain::ids::{EmailAddress, IdempotencyKey, InvitationId, UserId};
use crate::domain::membership::{Invitation, InvitationState, Membership, RemovalRecord};
use crate::domain::organization::{ModelRestrictions, OrganizationName, RestrictionList};
use crate::error::{Error, FieldContext, Result};
use crate::service::{NewOrganization, OrganizationOverrides, Service};
use crate::store::audit::AuditEvent;

#[derive(Debug, Clone)]
pub struct OrgAdminApi {
    service: Service,
}

impl OrgAdminApi {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

fn invitation(invitation: Invitation) -> proto::Invitation {
    let state = match invitation.state(Utc::now()) {
        InvitationState::Pending => proto::InvitationState::Pending,
        InvitationState::Accepted => proto::InvitationState::Accepted,
        InvitationState::Revoked => proto::InvitationState::Revoked,
        InvitationState::Expired => proto::InvitationState::Expired,
    };
    proto::Invitation {
        id: invitation.id.to_string(),
        org_id: invitation.org_id.to_string(),
        email: invitation.email.as_str().to_owned(),
        role: convert::role(invitation.role).into(),
        invited_by: invitation.invited_by,
        created_at: Some(convert::timestamp(invitation.created_at)),
        expires_at: Some(convert::timestamp(invitation.expires_at)),
        state: state.into(),
        accepted_by: invitation
            .accepted_by
            .map(|u| u.as_str().to_owned())
            .unwrap_or_default(),
    }
}

fn member(member: Membership) -> proto::Member {
    proto::Member {
        org_id: member.org_id.to_string(),
        user_id: member.user_id.as_str().to_owned(),
        role: convert::role(member.role).into(),
        joined_at: Some(convert::timestamp(member.joined_at)),
        takes_seat: member.role.takes_seat(),
    }
}

fn removal(record: RemovalRecord) -> proto::RemovalRecord {
    proto::RemovalRecord {
        org_id: record.org_id.to_string(),
        user_id: record.user_id,
        removed_at: Some(convert::timestamp(record.removed_at)),
        removed_by: record.removed_by,
        previous_role: convert::role(record.previous_role).into(),
    }
}

fn audit_event(event: AuditEvent) -> proto::AuditEvent {
    let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string()).unwrap_or_default();
    proto::AuditEvent {
        id: event.id,
        org_id: event.org_id.to_string(),
        actor: event.actor,
        action: event.action,
        before_json: json(event.before),
        after_json: json(event.after),
        occurred_at: Some(convert::timestamp(event.occurred_at)),
    }
}

fn invitation_id(raw: &str) -> Result<InvitationId> {
    InvitationId::parse(raw).field("invitation_id")
}

impl TryFrom<proto::CreateOrganizationRequest> for NewOrganization {
    type Error = Error;

    /// The plan is checked against the catalog by the service's caller
    /// below, which has the catalog at hand.
    fn try_from(request: proto::CreateOrganizationRequest) -> Result<Self> {
        Ok(Self {
            name: OrganizationName::parse(&request.name).field("name")?,
            creator: match request.creator_user_id.as_str() {
                "" => None,
                raw => Some(UserId::parse(raw).field("creator_user_id")?),
            },
            plan: None,
            idempotency_key: IdempotencyKey::parse_optional(&request.idempotency_key)
                .field("idempotency_key")?,
        })
    }
}

#[tonic::async_trait]
impl OrgAdminService for OrgAdminApi {
    async fn create_organization(
        &self,
        request: Request<proto::CreateOrganizationRequest>,
    ) -> Result<Response<proto::Organization>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let plan = match &request.plan {
            None => None,
            Some(raw) => Some(self.service.catalog().parse_plan_id(raw).field("plan")?),
        };
        let new = NewOrganization {
            plan,
            ..NewOrganization::try_from(request)?
        };
        let view = self.service.create_organization(&actor, new).await?;
        Ok(Response::new(convert::organization(view)))
    }

    async fn get_organization(
        &self,
        request: Request<proto::GetOrganizationRequest>,
    ) -> Result<Response<proto::Organization>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let view = self.service.get_organization(&actor, org).await?;
        Ok(Response::new(convert::organization(view)))
    }

    async fn list_organizations(
        &self,
        request: Request<proto::ListOrganizationsRequest>,
    ) -> Result<Response<proto::ListOrganizationsResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let size = page_size(request.page_size, 50, 500)?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(crate::domain::ids::OrgId::parse(token).field("page_token")?),
        };
        let page = self.service.list_organizations(&actor, after, size).await?;
        Ok(Response::new(proto::ListOrganizationsResponse {
            organizations: page.items.into_iter().map(convert::organization).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn delete_organization(
        &self,
        request: Request<proto::DeleteOrganizationRequest>,
    ) -> Result<Response<proto::DeleteOrganizationResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        self.service.delete_organization(&actor, org).await?;
        Ok(Response::new(proto::DeleteOrganizationResponse {}))
    }

    async fn invite_member(
        &self,
        request: Request<proto::InviteMemberRequest>,
    ) -> Result<Response<proto::Invitation>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let email = EmailAddress::parse(&request.email).field("email")?;
        let role = parse_role("role", request.role)?;
        let created = self.service.invite_member(&actor, org, email, role).await?;
        Ok(Response::new(invitation(created)))
    }

    async fn accept_invitation(
        &self,
        request: Request<proto::AcceptInvitationRequest>,
    ) -> Result<Response<proto::Member>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let id = invitation_id(&request.invitation_id)?;
        let user = user_id(&request.user_id)?;
        let joined = self.service.accept_invitation(&actor, id, user).await?;
        Ok(Response::new(member(joined)))
    }

    async fn revoke_invitation(
        &self,
        request: Request<proto::RevokeInvitationRequest>,
    ) -> Result<Response<proto::Invitation>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let id = invitation_id(&request.invitation_id)?;
        let revoked = self.service.revoke_invitation(&actor, org, id).await?;
        Ok(Response::new(invitation(revoked)))
    }

    async fn list_invitations(
        &self,
        request: Request<proto::ListInvitationsRequest>,
    ) -> Result<Response<proto::ListInvitationsResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let listed = self
            .service
            .list_invitations(&actor, org, request.include_closed)
            .await?;
        Ok(Response::new(proto::ListInvitationsResponse {
            invitations: listed.into_iter().map(invitation).collect(),
        }))
    }

    async fn list_members(
        &self,
        request: Request<proto::ListMembersRequest>,
    ) -> Result<Response<proto::ListMembersResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let view = self.service.list_members(&actor, org).await?;
        Ok(Response::new(proto::ListMembersResponse {
            members: view.members.into_iter().map(member).collect(),
            seat_usage: Some(convert::seat_usage(&view.seat_usage)),
        }))
    }

    async fn update_member_role(
        &self,
        request: Request<proto::UpdateMemberRoleRequest>,
    ) -> Result<Response<proto::Member>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let user = user_id(&request.user_id)?;
        let role = parse_role("role", request.role)?;
        let updated = self
            .service
            .update_member_role(&actor, org, user, role)
            .await?;
        Ok(Response::new(member(updated)))
    }

    async fn remove_member(
        &self,
        request: Request<proto::RemoveMemberRequest>,
    ) -> Result<Response<proto::RemovalRecord>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let user = user_id(&request.user_id)?;
        let record = self.service.remove_member(&actor, org, user).await?;
        Ok(Response::new(removal(record)))
    }

    async fn list_removal_records(
        &self,
        request: Request<proto::ListRemovalRecordsRequest>,
    ) -> Result<Response<proto::ListRemovalRecordsResponse>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let records = self.service.list_removal_records(&actor, org).await?;
        Ok(Response::new(proto::ListRemovalRecordsResponse {
            records: records.into_iter().map(removal).collect(),
        }))
    }

    async fn get_seat_usage(
        &self,
        request: Request<proto::GetSeatUsageRequest>,
    ) -> Result<Response<proto::SeatUsage>, Status> {
        let actor = actor(&request)?;
        let org = org_id(&request.get_ref().org_id)?;
        let usage = self.service.seat_usage(&actor, org).await?;
        Ok(Response::new(convert::seat_usage(&usage)))
    }

    async fn set_model_restrictions(
        &self,
        request: Request<proto::SetModelRestrictionsRequest>,
    ) -> Result<Response<proto::Organization>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let restrictions =
            ModelRestrictions::parse(&request.model_deny_list, &request.provider_allow_list)
                .map_err(|(list, reason)| {
                    let field = match list {
                        RestrictionList::ModelDenyList => "model_deny_list",
                        RestrictionList::ProviderAllowList => "provider_allow_list",
                    };
                    Error::invalid(field, reason.0)
                })?;
        let view = self
            .service
            .set_model_restrictions(&actor, org, restrictions)
            .await?;
        Ok(Response::new(convert::organization(view)))
    }

    async fn set_trial_end(
        &self,
        request: Request<proto::SetTrialEndRequest>,
    ) -> Result<Response<proto::Organization>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let trial_end = parse_timestamp("trial_end", request.trial_end.as_ref())?;
        let view = self.service.set_trial_end(&actor, org, trial_end).await?;
        Ok(Response::new(convert::organization(view)))
    }

    async fn set_organization_overrides(
        &self,
        request: Request<proto::SetOrganizationOverridesRequest>,
    ) -> Result<Response<proto::Organization>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let sponsorship_tier = match request.sponsorship_tier.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(tier) if tier.len() <= 64 && !tier.chars().any(char::is_control) => {
                Some(Some(tier.to_owned()))
            }
            Some(_) => {
                return Err(Error::invalid(
                    "sponsorship_tier",
                    "must be at most 64 printable characters",
                )
                .into());
            }
        };
        let plan = match &request.plan {
            None => None,
            Some(raw) => Some(self.service.catalog().parse_plan_id(raw).field("plan")?),
        };
        let overrides = OrganizationOverrides {
            require_seats: request.require_seats,
            sponsorship_tier,
            suppress_trial_messaging: request.suppress_trial_messaging,
            plan,
        };
        let view = self.service.set_overrides(&actor, org, overrides).await?;
        Ok(Response::new(convert::organization(view)))
    }

    async fn delete_user_data(
        &self,
        request: Request<proto::DeleteUserDataRequest>,
    ) -> Result<Response<proto::DeleteUserDataResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let user = user_id(&request.user_id)?;
        let emails = request
            .emails
            .iter()
            .map(|e| EmailAddress::parse(e).field("emails"))
            .collect::<Result<Vec<_>>>()?;
        let report = self.service.delete_user_data(&actor, user, emails).await?;
        Ok(Response::new(proto::DeleteUserDataResponse {
            memberships_removed: report.memberships_removed as i64,
            invitations_removed: report.invitations_removed as i64,
            removal_records_anonymized: report.removal_records_anonymized as i64,
            audit_events_anonymized: report.audit_events_anonymized as i64,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.get_ref();
        let org = org_id(&request.org_id)?;
        let size = page_size(request.page_size, 100, 500)?;
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                Error::invalid("page_token", "is not a token from a previous page")
            })?),
        };
        let page = self
            .service
            .list_audit_events(&actor, org, before, size)
            .await?;
        Ok(Response::new(proto::ListAuditEventsResponse {
            events: page.items.into_iter().map(audit_event).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}
