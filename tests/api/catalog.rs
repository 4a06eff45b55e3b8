use billing_service::domain::catalog::Catalog;
use billing_service::grpc::proto::{self, BillingCycle, PricingModel};

use crate::helpers::{As, TestOptions, request, spawn_app, spawn_app_with};

fn price(plan: &proto::Plan, cycle: BillingCycle) -> &proto::Price {
    plan.prices
        .iter()
        .find(|p| p.billing_cycle() == cycle)
        .unwrap_or_else(|| panic!("{} has a {cycle:?} price", plan.id))
}

fn amount(plan: &proto::Plan, cycle: BillingCycle) -> i64 {
    price(plan, cycle)
        .amount
        .as_ref()
        .map_or(-1, |m| m.amount_minor)
}

async fn plans(app: &crate::helpers::TestApp) -> Vec<proto::Plan> {
    app.billing()
        .list_plans(request(As::User("anyone"), proto::ListPlansRequest {}))
        .await
        .expect("plans")
        .into_inner()
        .plans
}

#[tokio::test]
async fn the_default_catalog_prices_teams_and_enterprise_per_seat() {
    let app = spawn_app().await;
    let plans = plans(&app).await;
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["teams", "enterprise"]);
    let (teams, enterprise) = (&plans[0], &plans[1]);
    assert_eq!(teams.pricing_model(), PricingModel::PerSeat);
    assert_eq!(amount(teams, BillingCycle::Monthly), 1800);
    assert_eq!(amount(teams, BillingCycle::Yearly), 18000);
    assert_eq!(amount(enterprise, BillingCycle::Monthly), 7200);
    assert_eq!(amount(enterprise, BillingCycle::Yearly), 72000);
    assert_eq!(
        price(teams, BillingCycle::Monthly)
            .amount
            .as_ref()
            .map(|m| m.currency.as_str()),
        Some("usd")
    );
    assert!(enterprise.enforces_model_restrictions && !teams.enforces_model_restrictions);
    assert!(price(teams, BillingCycle::Monthly).self_serve_signup);
}

#[tokio::test]
async fn monthly_signup_can_be_switched_off_for_new_customers() {
    let app = spawn_app_with(TestOptions {
        monthly_signup: false,
        ..TestOptions::default()
    })
    .await;
    for plan in plans(&app).await {
        assert!(
            !price(&plan, BillingCycle::Monthly).self_serve_signup,
            "{}",
            plan.id
        );
        assert!(
            price(&plan, BillingCycle::Yearly).self_serve_signup,
            "{}",
            plan.id
        );
        assert_eq!(
            plan.prices.len(),
            2,
            "existing monthly customers still see the price"
        );
    }
}

#[tokio::test]
async fn the_saas_example_catalog_models_flat_prices_and_project_limits() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/catalogs/saas-example.toml"
    ))
    .expect("example catalog");
    let app = spawn_app_with(TestOptions {
        catalog: Catalog::from_toml(&text).expect("parses"),
        ..TestOptions::default()
    })
    .await;
    let plans = plans(&app).await;
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "pro", "enterprise"]);
    let expected = [
        ("free", 0, 0, Some(3)),
        ("pro", 4999, 49990, Some(50)),
        ("enterprise", 9999, 99990, None),
    ];
    for (plan, (id, monthly, yearly, max_projects)) in plans.iter().zip(expected) {
        assert_eq!(plan.id, id);
        assert_eq!(plan.pricing_model(), PricingModel::Flat, "{id}");
        assert_eq!(amount(plan, BillingCycle::Monthly), monthly, "{id}");
        assert_eq!(amount(plan, BillingCycle::Yearly), yearly, "{id}");
        assert_eq!(yearly, monthly * 10, "{id}: yearly is ten months");
        let limit = plan
            .limits
            .iter()
            .find(|l| l.name == "max_projects")
            .expect("limit");
        assert_eq!(limit.value, max_projects, "{id}");
    }

    // Organizations run on the example's plans too.
    let org = app.create_org_on("alice", Some("free")).await;
    assert_eq!(org.plan, "free");
    let entitlements = app.entitlements_of(&org.id).await;
    assert_eq!(
        entitlements
            .limits
            .iter()
            .find(|l| l.name == "max_projects")
            .and_then(|l| l.value),
        Some(3)
    );
    assert_eq!(
        app.create_org("bob").await.plan,
        "pro",
        "the example's default plan"
    );
    assert!(app.check(&org.id, "alice").await.allowed);
}
