//! `http`: a URL answers a GET with the expected status. Metrics `response_ms` (until the
//! status line) and `status_code`.
//!
// Design: a minimal HTTP/1.1 client over a tokio `TcpStream` instead of an HTTP library, to
// keep the agent small: it sends one GET and reads only the status line. Plain `http://`
// only; for `https://` use an `exec` check with Monitoring Plugins' `check_http`.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::tcp::{metric, round1};
use crate::health::{CheckOutcome, Status};

/// The longest status line read.
const MAX_STATUS_LINE: u64 = 8 * 1024;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, for connecting.
    pub authority: String,
    /// The `Host` header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                format!("{url:?}: https is not supported; use an exec check with check_http")
            } else {
                format!("{url:?} must start with http://")
            });
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(format!("{url:?} has no valid host"));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority_with_port = if has_port {
            let port = authority.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
            if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                return Err(format!("{url:?} has no valid port"));
            }
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        if path.contains(char::is_whitespace) {
            return Err(format!("{url:?} has white space in its path"));
        }
        Ok(Self {
            authority: authority_with_port,
            host: authority.to_owned(),
            path,
        })
    }
}

/// An `http` check.
#[derive(Debug)]
pub struct Http {
    url: HttpUrl,
    expect_status: u16,
}

impl Http {
    pub fn new(url: HttpUrl, expect_status: u16) -> Self {
        Self { url, expect_status }
    }

    pub async fn run(&self) -> CheckOutcome {
        let started = Instant::now();
        match self.status().await {
            Err(e) => CheckOutcome {
                status: Status::Critical,
                message: format!("http://{}{}: {e}", self.url.host, self.url.path),
                metrics: Vec::new(),
            },
            Ok((code, line)) => {
                let ms = round1(started.elapsed().as_secs_f64() * 1000.0);
                let metrics = vec![
                    (metric("response_ms"), ms),
                    (metric("status_code"), f64::from(code)),
                ];
                let (status, message) = if code == self.expect_status {
                    (Status::Ok, format!("{line} in {ms} ms"))
                } else {
                    (
                        Status::Critical,
                        format!("{line}, expected {} ({ms} ms)", self.expect_status),
                    )
                };
                CheckOutcome {
                    status,
                    message,
                    metrics,
                }
            }
        }
    }

    /// Sends the GET and returns the status code with the status line.
    async fn status(&self) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(self.url.authority.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: alarmnet-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.url.path, self.url.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream).take(MAX_STATUS_LINE);
        let mut line = Vec::new();
        reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&line).trim().to_owned();
        parse_status_line(&line).map(|code| (code, line))
    }
}

fn parse_status_line(line: &str) -> Result<u16, String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(if line.is_empty() {
            "connection closed without a response".into()
        } else {
            format!("not an HTTP response: {line:?}")
        });
    }
    match code.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(format!("bad status line {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection-at-a-time server on port 0 answering every request with `response`;
    /// returns its address and a receiver of the requests it saw.
    async fn serve(
        response: &'static str,
    ) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).into_owned()).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn expected_status_is_ok_and_the_request_is_well_formed() {
        let (addr, mut requests) = serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let url = HttpUrl::parse(&format!("http://{addr}/health?x=1")).expect("url");
        let out = Http::new(url, 200).run().await;
        assert_eq!(out.status, Status::Ok, "{}", out.message);
        assert!(
            out.message.starts_with("HTTP/1.1 200 OK in "),
            "{}",
            out.message
        );
        assert_eq!(out.metrics[1].1, 200.0);
        assert_eq!(out.metrics[0].0.as_str(), "response_ms");
        let req = requests.recv().await.expect("request");
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req}");
    }

    #[tokio::test]
    async fn other_statuses_garbage_and_refusals_are_critical() {
        let (addr, _r) = serve("HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let url = HttpUrl::parse(&format!("http://{addr}/")).expect("url");
        let out = Http::new(url, 200).run().await;
        assert_eq!(out.status, Status::Critical);
        assert!(
            out.message.contains("503") && out.message.contains("expected 200"),
            "{}",
            out.message
        );
        assert_eq!(out.metrics[1].1, 503.0);

        let (addr, _r) = serve("SSH-2.0-OpenSSH\r\n").await;
        let url = HttpUrl::parse(&format!("http://{addr}/")).expect("url");
        let out = Http::new(url, 200).run().await;
        assert_eq!(out.status, Status::Critical);
        assert!(
            out.message.contains("not an HTTP response"),
            "{}",
            out.message
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let url = HttpUrl::parse(&format!("http://{addr}")).expect("url");
        let out = Http::new(url, 200).run().await;
        assert_eq!(out.status, Status::Critical);
        assert!(out.metrics.is_empty());
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://player.local").expect("url");
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.path.as_str()),
            ("player.local:80", "player.local", "/")
        );
        let u = HttpUrl::parse("http://[::1]:8080?q").expect("url");
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:8080", "/?q")
        );
        let u = HttpUrl::parse("http://[::1]/x").expect("url");
        assert_eq!(u.authority, "[::1]:80");
        assert!(
            HttpUrl::parse("https://x/")
                .expect_err("https")
                .contains("https is not supported")
        );
        assert!(HttpUrl::parse("ftp://x/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
        assert!(HttpUrl::parse("http://x:99999/").is_err());
        assert!(HttpUrl::parse("http://u@x/").is_err());
    }
}
