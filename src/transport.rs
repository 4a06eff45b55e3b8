//! How the gRPC server treats its connections, shared by the service and
//! the benchmark's no-op baseline so that both are measured on the same
//! transport.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Longest time one RPC may take before it is cancelled, so a stuck query
/// cannot pin a connection forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway keeps its connections for days and sends small calls on
/// them. Pings every 20 s (answered within 10 s) keep idle connections
/// through NATs and load balancers and find dead peers in half a minute;
/// TCP keepalive backs that up for peers that stop answering pings.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Accepted connections with TCP_NODELAY: small unary answers go out at
/// once, where Nagle's algorithm would meet the client's delayed ACK in a
/// 40 ms stall.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// A server builder with the call timeout and HTTP/2 keepalive pings.
///
/// Flow control stays on hyper's fixed 1 MiB windows, far above what a
/// burst of small unary calls needs. The adaptive window starts at 64 KiB,
/// and with it 200 concurrent calls on one connection intermittently drew
/// a GOAWAY (`ENHANCE_YOUR_CALM`, "too_many_data_frames") from h2's budget
/// for small DATA frames (`credits::two_hundred_concurrent_usage_debits_sum_exactly`
/// failed 1 run in 7 with it, 0 in 15 without).
pub fn server() -> Server {
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_adaptive_window(Some(false))
}
