//! The service's own binary as a second replica: started on a test's
//! database and Stripe server, and killed with SIGKILL when a test says so.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    BFF_TOKEN, GATEWAY_TOKEN, OPS_TOKEN, PREVIOUS_WEBHOOK_SECRET, TestApp, WEBHOOK_SECRET,
};
use crate::stripe_server::FakeStripe;

/// A replica running the real binary, with its ports fixed so that a
/// restart answers where the last one did.
pub struct ServiceProcess {
    pub grpc_port: u16,
    pub webhook_port: u16,
    /// Extra settings, as `(variable, value)`.
    settings: Vec<(&'static str, String)>,
    database_url: String,
    stripe_base: String,
    child: Option<Child>,
}

impl ServiceProcess {
    /// A replica on `app`'s database and `stripe`, not started yet; billing
    /// operation claims lapse after a second.
    pub fn new(app: &TestApp, stripe: &FakeStripe) -> Self {
        Self {
            grpc_port: free_port(),
            webhook_port: free_port(),
            settings: vec![("BILLING_OPERATION_LEASE_MS", "1000".into())],
            database_url: app.database_url(),
            stripe_base: stripe.base_url.clone(),
            child: None,
        }
    }

    /// Adds (or overrides) one environment setting for every start.
    pub fn with(mut self, variable: &'static str, value: impl Into<String>) -> Self {
        self.settings.retain(|(name, _)| *name != variable);
        self.settings.push((variable, value.into()));
        self
    }

    /// Starts the binary (again, after a kill) and waits until it serves gRPC.
    pub async fn start(&mut self) -> Channel {
        assert!(self.child.is_none(), "the replica is already running");
        let mut command = Command::new(env!("CARGO_BIN_EXE_billing-service"));
        command
            .env("DATABASE_URL", &self.database_url)
            .env("BILLING_GRPC_ADDR", format!("127.0.0.1:{}", self.grpc_port))
            .env(
                "BILLING_WEBHOOK_ADDR",
                format!("127.0.0.1:{}", self.webhook_port),
            )
            .env(
                "BILLING_CALLER_TOKENS",
                format!("gateway:{GATEWAY_TOKEN},bff:{BFF_TOKEN},ops:{OPS_TOKEN}"),
            )
            .env(
                "STRIPE_WEBHOOK_SECRET",
                format!("{WEBHOOK_SECRET},{PREVIOUS_WEBHOOK_SECRET}"),
            )
            .env("STRIPE_SECRET_KEY", "sk_test_billing_service")
            .env("STRIPE_API_BASE", &self.stripe_base)
            .env("RUST_LOG", "warn")
            .envs(self.settings.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for plan in ["teams", "enterprise"] {
            for cycle in ["monthly", "yearly"] {
                let name = format!(
                    "BILLING_STRIPE_PRICE_{}_{}",
                    plan.to_uppercase(),
                    cycle.to_uppercase()
                );
                command.env(name, format!("price_{plan}_{cycle}"));
                let unit = format!(
                    "BILLING_STRIPE_PRICE_{}_HOSTED_INSTANCES_{}",
                    plan.to_uppercase(),
                    cycle.to_uppercase()
                );
                command.env(unit, format!("price_hosted_instances_{cycle}"));
            }
        }
        self.child = Some(command.spawn().expect("the service binary starts"));
        connect(self.grpc_port).await
    }

    /// kill -9, and waits until the process is gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the replica is running");
        child.kill().expect("kill -9");
        child.wait().expect("the process is gone");
    }

    /// SIGTERM, as Kubernetes stops a pod; how the process ended, or `None`
    /// if it is still running after `patience`.
    pub async fn terminate(&mut self, patience: Duration) -> Option<ExitStatus> {
        self.signal("TERM", patience).await
    }

    /// Sends the signal (`TERM`, `HUP`, ...); how the process ended, or
    /// `None` if it is still running after `patience`.
    pub async fn signal(&mut self, name: &str, patience: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the replica is running");
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name}: {sent}");
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("the process's status") {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The address Stripe would deliver webhooks to on this replica.
    pub fn webhook_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}{}",
            self.webhook_port,
            billing_service::stripe::WEBHOOK_PATH
        )
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A channel once the binary answers health checks SERVING: its ports are
/// bound before it serves, so a connection alone proves nothing.
async fn connect(port: u16) -> Channel {
    for _ in 0..300 {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .connect()
            .await
        {
            let health = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: "billing.v1.BillingService".into(),
                })
                .await;
            if health.is_ok_and(|reply| reply.into_inner().status() == ServingStatus::Serving) {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service binary did not start serving");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
