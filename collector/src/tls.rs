//! TLS for the HTTP API, event stream and console: the rustls server configuration built
//! from PEM files (`[http] tls_cert_file`, `tls_key_file`, optional `tls_client_ca_file`),
//! swapped in place on SIGHUP ([`TlsReloader::reload`]), and the listener that hands
//! finished handshakes to `axum::serve` ([`TlsListener`]).
//!
//! Design: the listening socket never closes. Each accepted connection is given the
//! configuration current at that moment, so after a reload new handshakes present the new
//! certificate while connections already open (event streams) keep theirs. Handshakes run
//! in their own tasks (at most [`MAX_HANDSHAKES`] at once, each within
//! [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never holds up the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once; the accept loop waits beyond this.
pub const MAX_HANDSHAKES: usize = 256;

/// A client that has not finished its handshake within this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// The files the server's TLS is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; set: every client must present one.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be built; each names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: {path}: {problem}")]
    File {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("http.tls_cert_file, http.tls_key_file: {0}")]
    Pair(rustls::Error),
    #[error("http.tls_client_ca_file: {0}")]
    ClientCa(String),
}

fn file_error(key: &'static str, path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

pub(crate) fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "not a PEM file with a CERTIFICATE"));
    }
    Ok(certs)
}

/// The server configuration the files describe (HTTP/1.1 by ALPN, ring as the provider).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("http.tls_cert_file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        file_error(
            "http.tls_key_file",
            &files.key,
            format!("not a PEM file with a PRIVATE KEY ({e})"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("http.tls_client_ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("http.tls_client_ca_file", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    // axum is built for HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current server configuration and the files it came from. Cheap to clone; every
/// clone sees a reload.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsReloader {
    /// Reads the files (an error here stops the start).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again; new handshakes use them from now on. On an error the
    /// configuration in use stays (a half-copied certificate never takes the API down).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A TCP listener whose connections come out TLS-established, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes use `tls`'s configuration current at accept.
    pub fn new(tcp: TcpListener, tls: TlsReloader) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(tcp, tls, tx));
        Ok(Self {
            ready,
            local,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: TlsReloader,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let acceptor = TlsAcceptor::from(tls.current());
        let out = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = out.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "http: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when the server is going away.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).expect("write cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    #[test]
    fn files_load_mismatches_are_refused_and_a_failed_reload_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a_crt, a_key) = self_signed(dir.path(), "a");
        let (b_crt, _) = self_signed(dir.path(), "b");
        let files = TlsFiles {
            cert: a_crt.clone(),
            key: a_key.clone(),
            client_ca: Some(b_crt.clone()),
        };
        let reloader = TlsReloader::load(files.clone()).expect("a pair and a client CA");
        assert_eq!(
            reloader.current().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );

        let mismatched = TlsFiles {
            cert: b_crt.clone(),
            ..files.clone()
        };
        let e = server_config(&mismatched).expect_err("key of another certificate");
        assert!(
            e.to_string()
                .starts_with("http.tls_cert_file, http.tls_key_file"),
            "{e}"
        );
        let swapped = TlsFiles {
            cert: a_key.clone(),
            ..files.clone()
        };
        let e = server_config(&swapped).expect_err("a key where the certificate goes");
        assert!(e.to_string().starts_with("http.tls_cert_file: "), "{e}");
        let no_ca = TlsFiles {
            client_ca: Some(dir.path().join("missing.crt")),
            ..files.clone()
        };
        let e = server_config(&no_ca).expect_err("missing client CA");
        assert!(
            e.to_string().starts_with("http.tls_client_ca_file: "),
            "{e}"
        );

        // A truncated key: the reload fails and the configuration in use stays.
        let before = reloader.current();
        std::fs::write(&a_key, "-----BEGIN PRIVATE KEY-----\n").expect("truncate");
        let e = reloader.reload().expect_err("truncated key");
        assert!(e.to_string().starts_with("http.tls_key_file: "), "{e}");
        assert!(Arc::ptr_eq(&before, &reloader.current()));
    }
}
