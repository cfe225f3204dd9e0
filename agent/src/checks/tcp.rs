//! `tcp`: a `host:port` accepts a connection (the siren controller, a player's control
//! port). Metric `connect_ms`. The run's timeout bounds the name lookup and the connect.

use std::time::Instant;

use alarmnet_protocol::MetricName;
use tokio::net::TcpStream;

use crate::health::{CheckOutcome, Status};

/// A `tcp` check.
#[derive(Debug)]
pub struct Tcp {
    address: String,
}

/// Checks that `address` is `host:port` with a port number; the host is looked up per run.
pub fn parse_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} must be host:port"));
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .is_empty()
    {
        return Err(format!("{address:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{address:?} has no valid port (1..65535)")),
    }
}

impl Tcp {
    pub fn new(address: String) -> Self {
        Self { address }
    }

    pub async fn run(&self) -> CheckOutcome {
        let started = Instant::now();
        match TcpStream::connect(self.address.as_str()).await {
            Ok(stream) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                drop(stream);
                CheckOutcome {
                    status: Status::Ok,
                    message: format!("{} accepts connections ({ms:.1} ms)", self.address),
                    metrics: vec![(metric("connect_ms"), round1(ms))],
                }
            }
            Err(e) => CheckOutcome {
                status: Status::Critical,
                message: format!("{}: {e}", self.address),
                metrics: Vec::new(),
            },
        }
    }
}

/// A metric name known to be valid.
pub(crate) fn metric(name: &'static str) -> MetricName {
    MetricName::new(name).expect("built-in metric names are valid")
}

pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_is_ok_and_a_closed_one_critical() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let out = Tcp::new(addr.to_string()).run().await;
        assert_eq!(out.status, Status::Ok, "{}", out.message);
        assert_eq!(out.metrics.len(), 1);
        assert_eq!(out.metrics[0].0.as_str(), "connect_ms");
        assert!(out.metrics[0].1 >= 0.0);

        drop(listener);
        let out = Tcp::new(addr.to_string()).run().await;
        assert_eq!(out.status, Status::Critical);
        assert!(
            out.message.starts_with(&addr.to_string()),
            "{}",
            out.message
        );
        assert!(out.metrics.is_empty());
    }

    #[test]
    fn addresses_need_host_and_port() {
        assert!(parse_address("127.0.0.1:502").is_ok());
        assert!(parse_address("controller.local:80").is_ok());
        assert!(parse_address("[::1]:80").is_ok());
        assert!(parse_address("controller").is_err());
        assert!(parse_address(":80").is_err());
        assert!(parse_address("host:0").is_err());
        assert!(parse_address("host:http").is_err());
    }
}
