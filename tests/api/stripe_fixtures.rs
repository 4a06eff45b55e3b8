//! Stripe's own published example objects (`tests/fixtures/stripe`) parse
//! with the typed client. When a client upgrade and the pinned API version
//! drift apart, this fails first.

use serde::de::DeserializeOwned;
use serde_json::Value;

const VENDORED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stripe/objects.json"
);
const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/stripe-fixtures/objects.json"
);

/// Stripe's example objects by name ("subscription", "event", ...).
pub fn fixtures() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(VENDORED).unwrap_or_else(|e| panic!("{VENDORED}: {e}"));
    serde_json::from_str(&text).expect("objects.json is a JSON object")
}

#[test]
fn the_vendored_copy_matches_the_shared_fixtures() {
    // The shared copy sits beside the repository in CI; a lone clone has
    // only the vendored one, which the other tests use either way.
    if let Ok(shared) = std::fs::read(SHARED) {
        let vendored = std::fs::read(VENDORED).expect("vendored fixtures");
        assert!(
            shared == vendored,
            "tests/fixtures/stripe/objects.json differs from {SHARED}"
        );
    }
}

fn parses_as<T: DeserializeOwned>(name: &str, object: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(object.clone())
        .map(drop)
        .map_err(|e| format!("{name}: {e}"))
}

#[test]
fn every_stripe_example_object_parses_with_the_typed_client() {
    let fixtures = fixtures();
    let mut failures = Vec::new();
    for (name, object) in &fixtures {
        let parsed = match name.as_str() {
            "billing_portal.session" => {
                parses_as::<stripe_billing::BillingPortalSession>(name, object)
            }
            "charge" => parses_as::<stripe_core::Charge>(name, object),
            "checkout.session" => parses_as::<stripe_checkout::CheckoutSession>(name, object),
            "coupon" => parses_as::<stripe_product::Coupon>(name, object),
            "customer" => parses_as::<stripe_core::Customer>(name, object),
            "deleted_customer" => parses_as::<stripe_core::DeletedCustomer>(name, object),
            "deleted_subscription_item" => {
                parses_as::<stripe_billing::DeletedSubscriptionItem>(name, object)
            }
            "discount" => parses_as::<stripe_product::Discount>(name, object),
            "event" => parses_as::<stripe_core::Event>(name, object),
            "invoice" => parses_as::<stripe_billing::Invoice>(name, object),
            "invoiceitem" => parses_as::<stripe_billing::InvoiceItem>(name, object),
            "payment_intent" => parses_as::<stripe_core::PaymentIntent>(name, object),
            "price" => parses_as::<stripe_product::Price>(name, object),
            "product" => parses_as::<stripe_product::Product>(name, object),
            "promotion_code" => parses_as::<stripe_product::PromotionCode>(name, object),
            "subscription" => parses_as::<stripe_billing::Subscription>(name, object),
            "subscription_item" => parses_as::<stripe_billing::SubscriptionItem>(name, object),
            "subscription_schedule" => {
                parses_as::<stripe_billing::SubscriptionSchedule>(name, object)
            }
            "test_helpers.test_clock" => {
                parses_as::<stripe_billing::TestHelpersTestClock>(name, object)
            }
            other => Err(format!(
                "{other}: no typed counterpart is mapped in this test"
            )),
        };
        if let Err(failure) = parsed {
            failures.push(failure);
        }
    }
    assert!(
        fixtures.len() >= 19,
        "expected Stripe's 19 example objects, found {}",
        fixtures.len()
    );
    assert!(
        failures.is_empty(),
        "objects that did not parse:\n{}",
        failures.join("\n")
    );
}
