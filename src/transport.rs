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

/// A server builder with the call timeout, HTTP/2 keepalive pings and
/// adaptive flow-control windows (they follow the measured
/// bandwidth-delay product, so a busy connection is not held to the
/// 64 KiB default).
pub fn server() -> Server {
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_adaptive_window(Some(true))
}
