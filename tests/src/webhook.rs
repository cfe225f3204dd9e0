//! A webhook receiver: a plain HTTP/1.1 server on a free loopback port that records every
//! JSON body POSTed to it (with when it arrived) and answers 200, so a test can score the
//! notifications a collector sent against an exact expected list.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::wait::wait_for;

/// One notification as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub at: Instant,
}

impl Received {
    /// `(rule, subject, status)`: the subject is the node, else the site, else the region,
    /// else `-` (the collector itself).
    pub fn key(&self) -> (String, String, String) {
        key(&self.body)
    }
}

/// `(rule, subject, status)` of a notification body; see [`Received::key`].
pub fn key(body: &Value) -> (String, String, String) {
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let subject = s("node")
        .or_else(|| s("site").filter(|x| x != "_"))
        .or_else(|| s("region"))
        .unwrap_or_else(|| "-".to_owned());
    (
        s("rule").unwrap_or_default(),
        subject,
        s("status").unwrap_or_default(),
    )
}

/// The receiver. Dropping it stops the server.
#[derive(Debug)]
pub struct WebhookReceiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, recorded.clone()));
            }
        });
        WebhookReceiver {
            port,
            received,
            task,
        }
    }

    /// The URL to configure as a collector's `[[webhooks]] url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/alarmnet", self.port)
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `(rule, subject, status)` of everything received so far, in arrival order.
    pub fn keys(&self) -> Vec<(String, String, String)> {
        self.received().iter().map(Received::key).collect()
    }

    /// Asserts that the notifications received so far are exactly `want`, in any order;
    /// `context` (e.g. the collector's log) is shown when they are not.
    pub fn assert_exactly(&self, want: &[(String, String, String)], context: &str) {
        let got = self.keys();
        let (mut sorted, mut want) = (got.clone(), want.to_vec());
        sorted.sort();
        want.sort();
        assert_eq!(
            sorted, want,
            "notifications received (in order): {got:#?}\n{context}"
        );
    }

    /// Waits for the first notification matching `want`, returning it with its arrival.
    pub async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Received {
        wait_for(timeout, what, || {
            let found = self.received().into_iter().find(|r| want(&r.body));
            async move { found }
        })
        .await
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..body_start + length).skip(body_start).collect();
        if let Ok(json) = serde_json::from_slice::<Value>(&body) {
            received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Received {
                    body: json,
                    at: Instant::now(),
                });
        }
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_narrowest_subject() {
        let node = serde_json::json!({"rule":"node_offline","status":"firing",
            "region":"r","site":"s","node":"n"});
        let site = serde_json::json!({"rule":"site_outage","status":"resolved",
            "region":"r","site":"s"});
        let region = serde_json::json!({"rule":"region_outage","status":"firing",
            "region":"r","site":"_"});
        let own = serde_json::json!({"rule":"collector_blind","status":"firing"});
        let k = |v: &Value| {
            let (a, b, c) = key(v);
            format!("{a} {b} {c}")
        };
        assert_eq!(k(&node), "node_offline n firing");
        assert_eq!(k(&site), "site_outage s resolved");
        assert_eq!(k(&region), "region_outage r firing");
        assert_eq!(k(&own), "collector_blind - firing");
    }
}
