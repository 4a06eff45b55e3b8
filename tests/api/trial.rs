use billing_service::grpc::proto::{EntitlementReason, TrialStage};

use crate::helpers::{spawn_app, trial_end_in_days};

#[tokio::test]
async fn each_trial_stage_boundary_by_whole_days_remaining() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    // (days remaining, stage, allowed, reason)
    let table = [
        (8, TrialStage::Active, true, EntitlementReason::TrialActive),
        (
            7,
            TrialStage::EndingSoon,
            true,
            EntitlementReason::TrialActive,
        ),
        (
            4,
            TrialStage::EndingSoon,
            true,
            EntitlementReason::TrialActive,
        ),
        (
            3,
            TrialStage::EndingVerySoon,
            true,
            EntitlementReason::TrialActive,
        ),
        (
            1,
            TrialStage::EndingVerySoon,
            true,
            EntitlementReason::TrialActive,
        ),
        (
            0,
            TrialStage::ExpiresToday,
            true,
            EntitlementReason::TrialActive,
        ),
        (
            -1,
            TrialStage::SoftExpired,
            true,
            EntitlementReason::TrialGrace,
        ),
        (
            -3,
            TrialStage::SoftExpired,
            true,
            EntitlementReason::TrialGrace,
        ),
        (
            -4,
            TrialStage::HardExpired,
            false,
            EntitlementReason::TrialExpired,
        ),
    ];
    for (days, stage, allowed, reason) in table {
        let updated = app.set_trial_end(&org.id, trial_end_in_days(days)).await;
        assert_eq!(
            updated.trial.as_ref().map(|t| t.stage()),
            Some(stage),
            "{days} days"
        );

        let decision = app.check(&org.id, "alice").await;
        let trial = decision.trial.expect("trial");
        assert_eq!(trial.days_remaining, days, "{days} days");
        assert_eq!(trial.stage(), stage, "{days} days");
        assert_eq!(decision.allowed, allowed, "{days} days");
        assert_eq!(decision.reason(), reason, "{days} days");
    }
}

#[tokio::test]
async fn hard_expired_trial_denies_proxy_with_credits_locked_until_an_operator_extends_it() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;

    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;
    let denied = app.check(&org.id, "alice").await;
    assert!(!denied.allowed);
    assert_eq!(denied.reason(), EntitlementReason::TrialExpired);
    assert!(denied.credits_locked);

    app.set_trial_end(&org.id, trial_end_in_days(14)).await;
    let restored = app.check(&org.id, "alice").await;
    assert!(restored.allowed);
    assert_eq!(restored.reason(), EntitlementReason::TrialActive);
    assert!(!restored.credits_locked);
    assert_eq!(restored.trial.map(|t| t.days_remaining), Some(14));
}

#[tokio::test]
async fn an_operator_can_shorten_a_trial_too() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let shortened = app.set_trial_end(&org.id, trial_end_in_days(2)).await;
    assert_eq!(
        shortened.trial.map(|t| t.stage()),
        Some(TrialStage::EndingVerySoon)
    );
}
