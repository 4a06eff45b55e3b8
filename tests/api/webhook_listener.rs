//! The webhook port is on the open internet: idle, slow and too many
//! connections are closed or kept out, and gRPC keeps serving meanwhile.

use std::time::Duration;

use billing_service::http_listener::ListenerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};

/// Far longer than any timeout configured here: only a listener that never
/// closes a connection makes a test wait this long.
const GIVE_UP: Duration = Duration::from_secs(20);

fn webhook_addr(app: &TestApp) -> String {
    app.webhook_url
        .trim_start_matches("http://")
        .trim_end_matches(billing_service::stripe::WEBHOOK_PATH)
        .to_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(webhook_addr(app))
        .await
        .expect("connect to the webhook port")
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(GIVE_UP, stream.read(&mut buf)).await {
            Err(_) => panic!("the listener never closed the connection"),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` one at a time, `every` apart, until done or the server
/// hangs up.
fn trickle(mut stream: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for byte in bytes {
            if stream.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

async fn health_is_serving(app: &TestApp) {
    let answer = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "billing.v1.EntitlementService".into(),
        })
        .await
        .expect("health answers");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
}

const REQUEST_HEAD: &str = "POST /stripe/webhook HTTP/1.1\r\nhost: billing\r\n";

#[tokio::test]
async fn idle_and_slow_webhook_connections_are_closed_after_the_timeouts_while_grpc_keeps_serving()
{
    let app = spawn_app_with(TestOptions {
        webhook_limits: ListenerLimits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..ListenerLimits::default()
        },
        ..TestOptions::default()
    })
    .await;

    // Connected, and never a byte.
    let mut idle = connect(&app).await;
    // Headers a byte every 50 ms, never finishing in time.
    let (mut slow_headers, writer) = connect(&app).await.into_split();
    trickle(
        writer,
        format!("{REQUEST_HEAD}stripe-signature: t=1,v1=00\r\n\r\n").into_bytes(),
        Duration::from_millis(50),
    );
    // Headers at once, then a body that trickles: each byte is in time for
    // a per-read timer, but the whole body misses its deadline.
    let (mut slow_body, mut writer) = connect(&app).await.into_split();
    writer
        .write_all(format!("{REQUEST_HEAD}content-length: 1000\r\n\r\n").as_bytes())
        .await
        .expect("headers");
    trickle(writer, vec![b'{'; 1000], Duration::from_millis(20));
    // One request answered, then the kept-alive connection left idle.
    let mut kept_alive = connect(&app).await;
    kept_alive
        .write_all(format!("{REQUEST_HEAD}content-length: 2\r\n\r\n{{}}").as_bytes())
        .await
        .expect("request");

    health_is_serving(&app).await;
    assert_eq!(until_closed(&mut idle).await, "", "nothing was asked");
    let slow_headers_saw = {
        let mut seen = Vec::new();
        match tokio::time::timeout(GIVE_UP, slow_headers.read_to_end(&mut seen)).await {
            Err(_) => panic!("the listener never closed the slow-header connection"),
            Ok(_) => String::from_utf8_lossy(&seen).into_owned(),
        }
    };
    assert!(
        !slow_headers_saw.contains("200"),
        "headers that never arrived were not served: {slow_headers_saw}"
    );
    let slow_body_saw = {
        let mut seen = Vec::new();
        match tokio::time::timeout(GIVE_UP, slow_body.read_to_end(&mut seen)).await {
            Err(_) => panic!("the listener never closed the slow-body connection"),
            Ok(_) => String::from_utf8_lossy(&seen).into_owned(),
        }
    };
    assert!(
        !slow_body_saw.contains(" 200 "),
        "a body that never arrived was not stored: {slow_body_saw}"
    );
    let kept_alive_saw = until_closed(&mut kept_alive).await;
    assert!(
        kept_alive_saw.starts_with("HTTP/1.1 400"),
        "the request was answered before the idle connection was closed: {kept_alive_saw}"
    );
    health_is_serving(&app).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_unaccepted_while_grpc_keeps_serving() {
    let app = spawn_app_with(TestOptions {
        webhook_limits: ListenerLimits {
            max_connections: 3,
            ..ListenerLimits::default()
        },
        ..TestOptions::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&app).await);
    }
    // The kernel completes the handshake; the listener does not take it.
    let mut waiting = connect(&app).await;
    waiting
        .write_all(format!("{REQUEST_HEAD}content-length: 2\r\n\r\n{{}}").as_bytes())
        .await
        .expect("request");
    health_is_serving(&app).await;
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buf))
            .await
            .is_err(),
        "a connection beyond the cap is not served"
    );

    // A slot frees: the waiting connection is taken and answered.
    drop(held.pop());
    let read = tokio::time::timeout(GIVE_UP, waiting.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..read]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
