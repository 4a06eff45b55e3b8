//! Starts the real service on a fresh PostgreSQL database and talks to it
//! over real gRPC, as each caller would.

use billing_service::app::{App, AppSettings};
use billing_service::domain::catalog::{Catalog, PriceSlot, SignupPolicy};
use billing_service::domain::entitlement::{StalePolicy, StateVersion};
use billing_service::domain::ids::OrgId;
use billing_service::domain::money::{Currency, Money};
use billing_service::domain::pricing::{BillingCycle, PlanId};
use billing_service::domain::retry::RetryPolicy;
use billing_service::domain::subscription::Subscription;
use billing_service::domain::trial::TrialLength;
use billing_service::domain::webhooks::{AddressPolicy, RetrySchedule};
use billing_service::grpc::proto::billing_service_client::BillingServiceClient;
use billing_service::grpc::proto::credit_service_client::CreditServiceClient;
use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::org_admin_service_client::OrgAdminServiceClient;
use billing_service::grpc::proto::{self, Role};
use billing_service::grpc::{CallerTokens, ConcurrencyLimits};
use billing_service::http_listener::ListenerLimits;
use billing_service::service::{
    self, Clock, EntitlementCache, Service, SystemClock, WebhookSettings,
};
use billing_service::store;
use billing_service::stripe::{StripeSettings, WEBHOOK_PATH, WebhookSecrets};
use billing_service::worker::{InboxSettings, MaintenanceSettings};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prost_types::Timestamp;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::stripe_server::FakeStripe;

pub const GATEWAY_TOKEN: &str = "gateway-test-token-0001";
pub const BFF_TOKEN: &str = "bff-test-token-00000001";
pub const OPS_TOKEN: &str = "ops-test-token-00000001";
/// The webhook secret Stripe signs with now, and the one being rotated out.
pub const WEBHOOK_SECRET: &str = "whsec_test_current";
pub const PREVIOUS_WEBHOOK_SECRET: &str = "whsec_test_previous";

/// Who makes a call.
#[derive(Debug, Clone, Copy)]
pub enum As<'a> {
    /// The BFF acting for this end user.
    User(&'a str),
    Ops,
    Gateway,
    /// The BFF without an acting user.
    BffAlone,
    /// Any bearer token.
    Token(&'a str),
    NoToken,
}

/// Options for starting the app.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub catalog: Catalog,
    pub monthly_signup: bool,
    /// The Stripe API the app calls; `None` runs without Stripe.
    pub stripe_api_base: Option<String>,
    pub limits: ConcurrencyLimits,
    pub webhook_limits: ListenerLimits,
    /// Inbox workers per replica: one unless a test is about several, so
    /// tests that count Stripe requests see each claim in turn.
    pub inbox_concurrency: usize,
    pub stale_policy: StalePolicy,
    pub watch_log_capacity: usize,
    pub database_max_connections: u32,
    /// How long an operation's claim holds before the loop takes it over.
    pub operation_lease: Duration,
    /// Outbound webhooks: private targets allowed (receivers run on
    /// loopback), quick retries and leases.
    pub webhooks: WebhookSettings,
    /// `None` reads the system clock.
    pub clock: Option<Arc<dyn Clock>>,
}

/// The system clock moved by an offset the test sets.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<TimeDelta>,
}

impl ManualClock {
    pub fn jump(&self, by: TimeDelta) {
        *self.offset.lock().expect("lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + *self.offset.lock().expect("lock")
    }
}

/// Webhook settings for tests: loopback receivers allowed, a one-second
/// attempt timeout, retries in tens of milliseconds, a short lease, and
/// endpoints paused only after an hour of failures.
pub fn test_webhook_settings() -> WebhookSettings {
    WebhookSettings {
        policy: AddressPolicy {
            allow_private: true,
        },
        timeout: Duration::from_secs(1),
        retry: RetrySchedule {
            delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
            then_every: Duration::from_millis(200),
            give_up_after: Duration::from_secs(3600),
        },
        pause_after: Duration::from_secs(3600),
        lease: Duration::from_secs(3),
        concurrency: 8,
        poll_interval: Duration::from_millis(50),
    }
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            catalog: Catalog::from_toml(Catalog::DEFAULT_TOML).expect("default catalog"),
            monthly_signup: true,
            stripe_api_base: None,
            limits: ConcurrencyLimits::default(),
            webhook_limits: ListenerLimits::default(),
            inbox_concurrency: 1,
            stale_policy: StalePolicy {
                max_staleness: TimeDelta::seconds(60),
                fail_closed_features: vec![],
            },
            watch_log_capacity: 10_000,
            database_max_connections: 5,
            operation_lease: Duration::from_secs(5),
            webhooks: test_webhook_settings(),
            clock: None,
        }
    }
}

impl TestOptions {
    /// The defaults, with `stripe`'s price ids in the catalog and its API
    /// as the one the app calls.
    pub fn with_stripe(stripe: &FakeStripe) -> Self {
        Self {
            catalog: catalog_with_stripe_prices(),
            stripe_api_base: Some(stripe.base_url.clone()),
            ..Self::default()
        }
    }
}

/// The default catalog with the test Stripe server's price ids, and its
/// free seat price on Teams.
pub fn catalog_with_stripe_prices() -> Catalog {
    let toml = Catalog::DEFAULT_TOML.replacen(
        "enforces_model_restrictions = false",
        "enforces_model_restrictions = false\nfree_seat_stripe_price_ids = [\"price_teams_free_seat\"]",
        1,
    );
    Catalog::from_toml(&toml)
        .expect("catalog")
        .with_stripe_price_ids(|plan, slot, cycle| match slot {
            PriceSlot::Seat => Some(format!("price_{}_{}", plan.as_str(), cycle.as_str())),
            PriceSlot::UnitItem(item) => Some(format!("price_{item}_{}", cycle.as_str())),
        })
}

/// The app wired to a fresh test Stripe server.
pub async fn spawn_app_with_stripe() -> (TestApp, FakeStripe) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions::with_stripe(&stripe)).await;
    (app, stripe)
}

pub struct TestApp {
    pub channel: Channel,
    /// `http://127.0.0.1:<port>/stripe/webhook`
    pub webhook_url: String,
    /// `http://127.0.0.1:<port>/metrics`: every test app serves metrics.
    pub metrics_url: String,
    service: Service,
    admin: PgConnectOptions,
    db_name: String,
    /// Replicas share the first app's database and leave it be.
    owns_database: bool,
    options: TestOptions,
    /// A pool on the app's database, for putting state in place through the
    /// store layer.
    pub pool: PgPool,
    running: Running,
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

/// Creates a fresh database, starts the app on port 0 and connects to it.
pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    let admin: PgConnectOptions = admin_url().parse().expect("TEST_DATABASE_URL");
    let db_name = format!("billing_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .expect("PostgreSQL must be running (see README)");
    sqlx::query(&format!("create database {db_name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let database = admin.clone().database(&db_name);
    let started = start(&options, database.clone()).await;
    let pool = PgPool::connect_with(database).await.expect("pool");
    TestApp {
        channel: started.channel,
        webhook_url: started.webhook_url,
        metrics_url: started.metrics_url,
        service: started.service,
        admin,
        db_name,
        owns_database: true,
        options,
        pool,
        running: started.running,
    }
}

/// A running app.
struct Started {
    channel: Channel,
    webhook_url: String,
    metrics_url: String,
    service: Service,
    running: Running,
}

/// Stops a running app, as SIGTERM would.
#[derive(Clone)]
struct Running {
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>>,
}

async fn start(options: &TestOptions, database: PgConnectOptions) -> Started {
    let app = App::build(AppSettings {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        webhook_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        webhook_secrets: WebhookSecrets::parse(&format!(
            "{WEBHOOK_SECRET},{PREVIOUS_WEBHOOK_SECRET}"
        ))
        .expect("secrets"),
        database,
        database_max_connections: options.database_max_connections,
        caller_tokens: CallerTokens::parse(&format!(
            "gateway:{GATEWAY_TOKEN},bff:{BFF_TOKEN},ops:{OPS_TOKEN}"
        ))
        .expect("tokens"),
        catalog: options.catalog.clone(),
        service: service::Settings {
            trial_length: TrialLength::days(30),
            signup_policy: SignupPolicy {
                monthly_enabled: options.monthly_signup,
            },
            min_version_wait: Duration::from_millis(100),
            stale_policy: options.stale_policy.clone(),
            watch_log_capacity: options.watch_log_capacity,
            operation_lease: options.operation_lease,
            event_lease: Duration::from_secs(60),
            operation_wait: Duration::from_secs(5),
            usage_lanes: 4,
            webhooks: options.webhooks.clone(),
        },
        stripe: options
            .stripe_api_base
            .clone()
            .map(|api_base| StripeSettings {
                secret_key: "sk_test_billing_service".into(),
                api_base,
            }),
        // Quick retries, so a test sees an event parked in moments.
        inbox: InboxSettings {
            retry: RetryPolicy {
                max_attempts: 3,
                first_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            poll_interval: Duration::from_millis(50),
            catch_up_interval: InboxSettings::default().catch_up_interval,
            reconcile_interval: InboxSettings::default().reconcile_interval,
            concurrency: options.inbox_concurrency,
        },
        // Quick renewals and expiries, so a test sees them in moments.
        maintenance: MaintenanceSettings {
            interval: Duration::from_millis(100),
            ..MaintenanceSettings::default()
        },
        limits: options.limits,
        webhook_limits: options.webhook_limits,
        shutdown_grace: Duration::from_secs(10),
        clock: options.clock.clone(),
    })
    .await
    .expect("app builds");
    let addr = app.grpc_addr();
    let webhook_url = format!("http://{}{WEBHOOK_PATH}", app.webhook_addr());
    let metrics_url = format!("http://{}/metrics", app.metrics_addr().expect("metrics on"));
    let service = app.service().clone();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let done = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let running = Running {
        stop: Arc::new(stop),
        done: Arc::new(tokio::sync::Mutex::new(Some(done))),
    };
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Started {
        channel,
        webhook_url,
        metrics_url,
        service,
        running,
    }
}

impl TestApp {
    /// A second replica on the same database, as a deployment runs them.
    pub async fn spawn_replica(&self) -> TestApp {
        self.spawn_replica_with(self.options.clone()).await
    }

    /// A replica on the same database with settings of its own (say, one
    /// that reaches Stripe beside one that only receives webhooks).
    pub async fn spawn_replica_with(&self, options: TestOptions) -> TestApp {
        let database = self.admin.clone().database(&self.db_name);
        let started = start(&options, database.clone()).await;
        TestApp {
            channel: started.channel,
            webhook_url: started.webhook_url,
            metrics_url: started.metrics_url,
            service: started.service,
            admin: self.admin.clone(),
            db_name: self.db_name.clone(),
            owns_database: false,
            options,
            pool: PgPool::connect_with(database).await.expect("pool"),
            running: started.running,
        }
    }

    /// Stops this replica as SIGTERM would and waits until it has stopped
    /// (its loops and servers done); its database stays.
    pub async fn stop(&self) {
        let _ = self.running.stop.send(true);
        if let Some(done) = self.running.done.lock().await.take() {
            done.await
                .expect("the app task")
                .expect("the app stops cleanly");
        }
    }

    /// The URL of the app's database, for another process to share it.
    pub fn database_url(&self) -> String {
        let url = admin_url();
        let (server, _) = url.rsplit_once('/').expect("a database URL");
        format!("{server}/{}", self.db_name)
    }

    /// This replica's in-memory entitlement state.
    /// The use cases, for driving a background job at a chosen moment.
    pub fn service(&self) -> &Service {
        &self.service
    }

    pub fn cache(&self) -> &EntitlementCache {
        self.service.cache()
    }

    /// Makes the app's database refuse connections (and drops the open
    /// ones), or lets them in again: the database as if stopped and started.
    pub async fn set_database_reachable(&self, reachable: bool) {
        let admin = sqlx::PgPool::connect_with(self.admin.clone())
            .await
            .expect("admin");
        let db = &self.db_name;
        sqlx::query(&format!(
            "alter database {db} allow_connections {reachable}"
        ))
        .execute(&admin)
        .await
        .expect("alter database");
        if !reachable {
            sqlx::query(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
            )
            .bind(db)
            .execute(&admin)
            .await
            .expect("terminate");
        }
    }

    /// Waits until this replica's in-memory state has every change
    /// committed so far (for state put in place through the pool).
    pub async fn wait_for_cache(&self) {
        let clock: i64 = sqlx::query_scalar("select version from entitlement_clock")
            .fetch_one(&self.pool)
            .await
            .expect("clock");
        let target = StateVersion(u64::try_from(clock).expect("non-negative"));
        assert!(
            self.cache().wait_for(target, Duration::from_secs(10)).await,
            "the replica did not catch up with version {clock}"
        );
    }
}

impl Drop for TestApp {
    /// Drops the test's database (forcing out the app's own connections),
    /// so repeated runs on one machine do not pile databases up. Drop cannot
    /// await, so this runs on a thread with a runtime of its own.
    fn drop(&mut self) {
        if !self.owns_database {
            return;
        }
        let admin = self.admin.clone();
        let db_name = std::mem::take(&mut self.db_name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::query(&format!("drop database if exists {db_name} with (force)"))
                    .execute(&mut conn)
                    .await
                    .map(drop)
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test database: {error}");
        }
    }
}

pub fn request<T>(who: As<'_>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let token = match who {
        As::User(_) | As::BffAlone => Some(BFF_TOKEN),
        As::Ops => Some(OPS_TOKEN),
        As::Gateway => Some(GATEWAY_TOKEN),
        As::Token(token) => Some(token),
        As::NoToken => None,
    };
    let metadata = request.metadata_mut();
    if let Some(token) = token {
        metadata.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    if let As::User(user) = who {
        metadata.insert("x-acting-user-id", user.parse().expect("ascii"));
    }
    request
}

/// Asserts that a call failed with `code` and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(reply) => panic!("expected {code:?}, got a reply: {reply:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            status
        }
    }
}

/// A trial end placed so that whole days remaining is exactly `days` for
/// the rest of the test (half a day of slack either way).
pub fn trial_end_in_days(days: i64) -> Timestamp {
    timestamp(Utc::now() + TimeDelta::days(days) + TimeDelta::hours(12))
}

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

impl TestApp {
    pub fn org_admin(&self) -> OrgAdminServiceClient<Channel> {
        OrgAdminServiceClient::new(self.channel.clone())
    }

    pub fn entitlements(&self) -> EntitlementServiceClient<Channel> {
        EntitlementServiceClient::new(self.channel.clone())
    }

    pub fn billing(&self) -> BillingServiceClient<Channel> {
        BillingServiceClient::new(self.channel.clone())
    }

    /// Creates an organization owned by `owner` on `plan` (catalog default when `None`).
    pub async fn create_org_on(&self, owner: &str, plan: Option<&str>) -> proto::Organization {
        self.org_admin()
            .create_organization(request(
                As::User(owner),
                proto::CreateOrganizationRequest {
                    name: format!("{owner}'s team"),
                    plan: plan.map(str::to_owned),
                    ..Default::default()
                },
            ))
            .await
            .expect("create organization")
            .into_inner()
    }

    pub async fn create_org(&self, owner: &str) -> proto::Organization {
        self.create_org_on(owner, None).await
    }

    pub async fn invite(
        &self,
        who: As<'_>,
        org: &str,
        email: &str,
        role: Role,
    ) -> Result<proto::Invitation, Status> {
        self.org_admin()
            .invite_member(request(
                who,
                proto::InviteMemberRequest {
                    org_id: org.to_owned(),
                    email: email.to_owned(),
                    role: role.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn accept(&self, invitation: &str, user: &str) -> Result<proto::Member, Status> {
        self.org_admin()
            .accept_invitation(request(
                As::User(user),
                proto::AcceptInvitationRequest {
                    invitation_id: invitation.to_owned(),
                    user_id: user.to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Invites `user` (as an operator) and has them accept.
    pub async fn add_member(&self, org: &str, user: &str, role: Role) -> proto::Member {
        let invitation = self
            .invite(As::Ops, org, &format!("{user}@example.com"), role)
            .await
            .expect("invite");
        self.accept(&invitation.id, user).await.expect("accept")
    }

    pub async fn remove_member(
        &self,
        who: As<'_>,
        org: &str,
        user: &str,
    ) -> Result<proto::RemovalRecord, Status> {
        self.org_admin()
            .remove_member(request(
                who,
                proto::RemoveMemberRequest {
                    org_id: org.to_owned(),
                    user_id: user.to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn update_role(
        &self,
        who: As<'_>,
        org: &str,
        user: &str,
        role: Role,
    ) -> Result<proto::Member, Status> {
        self.org_admin()
            .update_member_role(request(
                who,
                proto::UpdateMemberRoleRequest {
                    org_id: org.to_owned(),
                    user_id: user.to_owned(),
                    role: role.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// GetEntitlements as the gateway.
    pub async fn entitlements_of(&self, org: &str) -> proto::GetEntitlementsResponse {
        self.entitlements()
            .get_entitlements(request(
                As::Gateway,
                proto::GetEntitlementsRequest {
                    org_id: org.to_owned(),
                    min_version: None,
                },
            ))
            .await
            .expect("get entitlements")
            .into_inner()
    }

    pub async fn set_trial_end(&self, org: &str, trial_end: Timestamp) -> proto::Organization {
        self.org_admin()
            .set_trial_end(request(
                As::Ops,
                proto::SetTrialEndRequest {
                    org_id: org.to_owned(),
                    trial_end: Some(trial_end),
                },
            ))
            .await
            .expect("set trial end")
            .into_inner()
    }

    pub async fn check_model(
        &self,
        org: &str,
        user: &str,
        model: Option<&str>,
        provider: Option<&str>,
    ) -> proto::CheckEntitlementResponse {
        self.entitlements()
            .check_entitlement(request(
                As::Gateway,
                proto::CheckEntitlementRequest {
                    org_id: org.to_owned(),
                    user_id: user.to_owned(),
                    feature: "proxy".to_owned(),
                    model: model.map(str::to_owned),
                    provider: provider.map(str::to_owned),
                    ..Default::default()
                },
            ))
            .await
            .expect("check entitlement")
            .into_inner()
    }

    pub async fn check(&self, org: &str, user: &str) -> proto::CheckEntitlementResponse {
        self.check_model(org, user, None, None).await
    }

    pub async fn seat_usage(&self, org: &str) -> proto::SeatUsage {
        self.org_admin()
            .get_seat_usage(request(
                As::Ops,
                proto::GetSeatUsageRequest {
                    org_id: org.to_owned(),
                },
            ))
            .await
            .expect("seat usage")
            .into_inner()
    }

    pub async fn audit_actions(&self, org: &str) -> Vec<proto::AuditEvent> {
        self.org_admin()
            .list_audit_events(request(
                As::Ops,
                proto::ListAuditEventsRequest {
                    org_id: org.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("audit events")
            .into_inner()
            .events
    }

    /// Puts a subscription in place through the store layer, as the Stripe
    /// webhook will once it exists.
    pub async fn put_subscription(&self, org: &str, status: &str, paid_seats: i64) {
        let org = OrgId::parse(org).expect("org id");
        let subscription = Subscription {
            stripe_subscription_id: format!("sub_{}", uuid::Uuid::new_v4().simple()),
            status_raw: status.to_owned(),
            plan: PlanId::new("teams"),
            billing_cycle: Some(BillingCycle::Monthly),
            paid_seats,
            current_period_start: Some(Utc::now() - TimeDelta::days(3)),
            current_period_end: Some(Utc::now() + TimeDelta::days(27)),
            cancel_at_period_end: false,
            ended_at: None,
            next_payment: Some(Money::new(
                1800 * paid_seats,
                Currency::parse("usd").expect("usd"),
            )),
            created_at: Utc::now(),
            pending_seat_decrease: None,
            pending_cycle_change: None,
            schedule_id: None,
            purchaser: None,
        };
        self.upsert_subscription(org, &subscription).await;
    }

    pub async fn upsert_subscription(&self, org: OrgId, subscription: &Subscription) {
        let mut conn = self.pool.acquire().await.expect("connection");
        store::subscriptions::upsert(&mut conn, org, subscription)
            .await
            .expect("upsert subscription");
        self.wait_for_cache().await;
    }
}

/// A `Stripe-Signature` header for `payload`, signed `age_seconds` ago.
pub fn stripe_signature(payload: &str, secret: &str, age_seconds: i64) -> String {
    let signed_at = Utc::now().timestamp() - age_seconds;
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(signed_at))
}

impl TestApp {
    /// Posts a webhook body with the given signature header (if any) and
    /// returns the HTTP status.
    pub async fn post_webhook(&self, body: String, signature: Option<String>) -> u16 {
        let mut post = reqwest::Client::new().post(&self.webhook_url).body(body);
        if let Some(signature) = signature {
            post = post.header("Stripe-Signature", signature);
        }
        post.send()
            .await
            .expect("webhook delivery")
            .status()
            .as_u16()
    }

    /// Delivers `payload` signed with the current secret, as Stripe would.
    pub async fn deliver(&self, payload: &str) -> u16 {
        let signature = stripe_signature(payload, WEBHOOK_SECRET, 0);
        self.post_webhook(payload.to_owned(), Some(signature)).await
    }

    /// How many times the event is stored in the inbox.
    pub async fn stored_events(&self, event_id: &str) -> i64 {
        sqlx::query_scalar("select count(*) from stripe_events where id = $1")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }
}

/// Billing through the test Stripe server.
impl TestApp {
    pub async fn checkout(
        &self,
        org: &str,
        user: &str,
        plan: &str,
        cycle: proto::BillingCycle,
        seats: i64,
    ) -> Result<String, Status> {
        self.billing()
            .create_checkout_session(request(
                As::User(user),
                proto::CreateCheckoutSessionRequest {
                    org_id: org.to_owned(),
                    plan: plan.to_owned(),
                    billing_cycle: cycle.into(),
                    seats,
                    success_url: "https://app.example.com/billing/done".into(),
                    cancel_url: "https://app.example.com/billing".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|reply| reply.into_inner().url)
    }

    /// A new organization of `owner` on Teams, billed monthly for `seats`
    /// seats, checked out and paid: returns its id and its subscription's.
    pub async fn subscribed_org(
        &self,
        stripe: &FakeStripe,
        owner: &str,
        seats: i64,
    ) -> (String, String) {
        let org = self.create_org(owner).await.id;
        let sub = self
            .subscribe(
                stripe,
                &org,
                owner,
                "teams",
                proto::BillingCycle::Monthly,
                seats,
            )
            .await;
        (org, sub)
    }

    /// Checks out and pays: the subscription exists at Stripe and its
    /// events have been delivered and applied. Returns its id.
    pub async fn subscribe(
        &self,
        stripe: &FakeStripe,
        org: &str,
        user: &str,
        plan: &str,
        cycle: proto::BillingCycle,
        seats: i64,
    ) -> String {
        let url = self
            .checkout(org, user, plan, cycle, seats)
            .await
            .expect("checkout session");
        let subscription = stripe.complete_checkout(&url);
        self.deliver_all(stripe).await;
        subscription
    }

    /// Delivers every queued Stripe event in order and waits until the
    /// inbox worker has applied them.
    pub async fn deliver_all(&self, stripe: &FakeStripe) {
        self.deliver_events(&stripe.take_events()).await;
    }

    /// Delivers `events` as given (duplicates, reorderings included), each
    /// acknowledged, and waits until the inbox worker has applied them.
    pub async fn deliver_events(&self, events: &[serde_json::Value]) {
        for event in events {
            assert_eq!(self.deliver(&event.to_string()).await, 200, "{event}");
        }
        self.wait_for_inbox().await;
    }

    /// Starts a Checkout purchase of `micros` of credit for `org` as
    /// `user`; returns the session's URL (not paid yet).
    pub async fn start_credit_purchase(&self, org: &str, user: &str, micros: i64) -> String {
        self.credits()
            .create_credit_purchase(request(
                As::User(user),
                proto::CreateCreditPurchaseRequest {
                    org_id: org.to_owned(),
                    amount_micros: micros,
                    success_url: "https://app.example.com/credits/done".into(),
                    cancel_url: "https://app.example.com/credits".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("purchase session")
            .into_inner()
            .url
    }

    /// The organization's members, as an operator sees them.
    pub async fn members_of(&self, org: &str) -> Vec<proto::Member> {
        self.org_admin()
            .list_members(request(
                As::Ops,
                proto::ListMembersRequest {
                    org_id: org.to_owned(),
                },
            ))
            .await
            .expect("members")
            .into_inner()
            .members
    }

    /// Waits until no stored event is waiting to be applied and no billing
    /// operation (an upkeep an event queued, say) is unfinished.
    pub async fn wait_for_inbox(&self) {
        // Patient: an event whose Stripe reads fail takes three tries with
        // backoff (3 s) per attempt before it is retried or parked.
        for _ in 0..1600 {
            let pending: i64 = sqlx::query_scalar(
                "select (select count(*) from stripe_events where state = 'pending')
                      + (select count(*) from billing_operations where status in ('queued', 'running'))",
            )
            .fetch_one(&self.pool)
            .await
            .expect("count pending");
            if pending == 0 {
                self.wait_for_cache().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the inbox worker did not apply the stored events");
    }

    /// The organization's Stripe customer, once it has one.
    pub async fn customer_of(&self, org: &str) -> String {
        sqlx::query_scalar("select stripe_customer_id from organizations where id = $1::uuid")
            .bind(org)
            .fetch_one(&self.pool)
            .await
            .expect("customer")
    }

    /// UpdateSeatCount as `who`, with an idempotency key if given.
    pub async fn set_seats(
        &self,
        who: As<'_>,
        org: &str,
        seats: i64,
        key: Option<&str>,
    ) -> Result<proto::UpdateSeatCountResponse, Status> {
        self.billing()
            .update_seat_count(request(
                who,
                proto::UpdateSeatCountRequest {
                    org_id: org.to_owned(),
                    seats,
                    idempotency_key: key.unwrap_or_default().to_owned(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// ChangeBillingCycle as `who`.
    pub async fn change_cycle(
        &self,
        who: As<'_>,
        org: &str,
        cycle: proto::BillingCycle,
    ) -> Result<proto::Subscription, Status> {
        self.billing()
            .change_billing_cycle(request(
                who,
                proto::ChangeBillingCycleRequest {
                    org_id: org.to_owned(),
                    billing_cycle: cycle.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// GetResubscribeDefaults as `who`.
    pub async fn resubscribe_defaults(&self, who: As<'_>, org: &str) -> proto::ResubscribeDefaults {
        self.billing()
            .get_resubscribe_defaults(request(
                who,
                proto::GetResubscribeDefaultsRequest {
                    org_id: org.to_owned(),
                },
            ))
            .await
            .expect("defaults")
            .into_inner()
    }

    /// The audit trail's actions, oldest first.
    pub async fn audit_trail(&self, org: &str) -> Vec<String> {
        let mut actions: Vec<String> = self
            .audit_actions(org)
            .await
            .into_iter()
            .map(|event| event.action)
            .collect();
        actions.reverse();
        actions
    }

    /// How stored events ended, by state.
    pub async fn event_state(&self, event_id: &str) -> String {
        sqlx::query_scalar("select state from stripe_events where id = $1")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .expect("event state")
    }

    pub async fn subscription_of(&self, org: &str, who: As<'_>) -> proto::Subscription {
        self.billing()
            .get_subscription(request(
                who,
                proto::GetSubscriptionRequest {
                    org_id: org.to_owned(),
                },
            ))
            .await
            .expect("subscription")
            .into_inner()
    }
}

/// Credits and add-on instances.
impl TestApp {
    pub fn credits(&self) -> CreditServiceClient<Channel> {
        CreditServiceClient::new(self.channel.clone())
    }

    /// Grants `micros` as an operator, keyed by `key`.
    pub async fn grant(&self, org: &str, micros: i64, key: &str) -> proto::PostedCreditEntry {
        self.credits()
            .grant_credits(request(
                As::Ops,
                proto::GrantCreditsRequest {
                    org_id: org.to_owned(),
                    amount_micros: micros,
                    reason: "test grant".into(),
                    expires_at: None,
                    idempotency_key: key.to_owned(),
                },
            ))
            .await
            .expect("grant credits")
            .into_inner()
    }

    pub async fn balance(&self, org: &str, who: As<'_>) -> proto::CreditBalance {
        self.credits()
            .get_credit_balance(request(
                who,
                proto::GetCreditBalanceRequest {
                    org_id: org.to_owned(),
                },
            ))
            .await
            .expect("credit balance")
            .into_inner()
    }

    /// The balance in micro-units, as an operator sees it.
    pub async fn balance_micros(&self, org: &str) -> i64 {
        self.balance(org, As::Ops)
            .await
            .balance_micros
            .expect("operators see amounts")
    }

    /// The organization's ledger, newest first, as an operator reads it.
    pub async fn ledger(&self, org: &str) -> Vec<proto::CreditEntry> {
        self.credits()
            .list_credit_entries(request(
                As::Ops,
                proto::ListCreditEntriesRequest {
                    org_id: org.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("ledger")
            .into_inner()
            .entries
    }

    pub async fn record_usage(
        &self,
        org: &str,
        user: &str,
        micros: i64,
        key: &str,
    ) -> Result<proto::RecordUsageResponse, Status> {
        self.record_usage_as(As::Gateway, org, user, micros, key)
            .await
    }

    /// A `gpt-4o` usage report by `who` (the gateway's is `record_usage`).
    pub async fn record_usage_as(
        &self,
        who: As<'_>,
        org: &str,
        user: &str,
        micros: i64,
        key: &str,
    ) -> Result<proto::RecordUsageResponse, Status> {
        self.entitlements()
            .record_usage(request(
                who,
                proto::RecordUsageRequest {
                    org_id: org.to_owned(),
                    user_id: user.to_owned(),
                    amount_micros: micros,
                    model: "gpt-4o".into(),
                    idempotency_key: key.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn create_instance(
        &self,
        who: As<'_>,
        org: &str,
        instance: &str,
        user: Option<&str>,
    ) -> Result<proto::InstanceSubscription, Status> {
        self.credits()
            .create_instance_subscription(request(
                who,
                proto::CreateInstanceSubscriptionRequest {
                    org_id: org.to_owned(),
                    instance_id: instance.to_owned(),
                    add_on: "agent".into(),
                    user_id: user.unwrap_or_default().to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn instance(
        &self,
        who: As<'_>,
        org: &str,
        instance: &str,
    ) -> Result<proto::InstanceSubscription, Status> {
        self.credits()
            .get_instance_subscription(request(
                who,
                proto::GetInstanceSubscriptionRequest {
                    org_id: org.to_owned(),
                    instance_id: instance.to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn check_instance(
        &self,
        org: &str,
        user: &str,
        instance: &str,
    ) -> proto::CheckEntitlementResponse {
        self.entitlements()
            .check_entitlement(request(
                As::Gateway,
                proto::CheckEntitlementRequest {
                    org_id: org.to_owned(),
                    user_id: user.to_owned(),
                    feature: "instance".to_owned(),
                    instance_id: Some(instance.to_owned()),
                    ..Default::default()
                },
            ))
            .await
            .expect("check instance")
            .into_inner()
    }

    /// Waits (for the maintenance loop) until `done` holds for the
    /// instance as an operator sees it, and returns it.
    pub async fn wait_for_instance(
        &self,
        org: &str,
        instance: &str,
        done: impl Fn(&proto::InstanceSubscription) -> bool,
    ) -> proto::InstanceSubscription {
        for _ in 0..200 {
            let current = self
                .instance(As::Ops, org, instance)
                .await
                .expect("instance");
            if done(&current) {
                return current;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("instance {instance} did not reach the expected state");
    }
}
