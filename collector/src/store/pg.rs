//! How the store reaches PostgreSQL: the URL and password, and TLS as libpq users know it
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), over rustls. [`PgTarget`] is what
//! every PostgreSQL connection of the collector is made from (store, readers, lease,
//! event relay).
//!
//! Design: tokio-postgres speaks TLS through its `MakeTlsConnect`/`TlsConnect` traits; the
//! few lines that implement them over `tokio-rustls` live here rather than in a crate
//! (`tokio-postgres-rustls` 0.14 would add sha2 and its own feature switches for a second
//! provider), with ring as the one crypto provider, as for the API and MQTT. tokio-postgres
//! parses `sslmode` itself but knows only `disable`, `prefer` and `require`, and refuses
//! the other `ssl*` options: they are taken out of the URL here and applied by our
//! certificate verifier. Channel binding (SCRAM-SHA-256-PLUS) is not offered: with
//! `verify-full` the server is already authenticated.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::Socket;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::StoreError;

/// libpq's `sslmode`, as far as the collector supports it (`allow` is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP: the password and every row cross the network in clear.
    Disable,
    /// TLS when the server offers it, plain otherwise; the server is not authenticated.
    Prefer,
    /// TLS or no connection. The server is authenticated only with a CA (then as
    /// `verify-ca`, as libpq does).
    Require,
    /// TLS, the server's certificate signed by the CA; any host name.
    VerifyCa,
    /// TLS, the server's certificate signed by the CA and naming the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "store.url: sslmode={other} is not supported \
                     (disable, prefer, require, verify-ca or verify-full)"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// `[store] ca_file`, `cert_file`, `key_file`: the TLS files named in the configuration
/// rather than in the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What the URL and the files say about TLS, checked; the URL without libpq's TLS
/// options, for tokio-postgres to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// The URL tokio-postgres parses (its `sslmode` removed: it is [`Self::mode`]).
    url: String,
    pub mode: SslMode,
    /// The CA and the key that named it (`store.ca_file` or `sslrootcert`).
    ca: Option<(&'static str, PathBuf)>,
    /// A client certificate and its key, for the server's `cert` authentication.
    client: Option<(PathBuf, PathBuf)>,
}

impl PgTls {
    /// Reads `url`'s TLS options and `files` together. Without `sslmode`: `verify-full`
    /// when a CA is given, `prefer` otherwise (libpq's default). Every problem is returned,
    /// each under its key.
    pub fn settle(url: &str, files: &PgTlsFiles) -> Result<PgTls, Vec<String>> {
        let mut errors = Vec::new();
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root, mut cert, mut key) = (None, None, None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(v);
            match k {
                "sslmode" => match SslMode::parse(&value) {
                    Ok(m) => mode = Some(m),
                    Err(e) => errors.push(e),
                },
                "sslrootcert" => root = Some(PathBuf::from(value)),
                "sslcert" => cert = Some(PathBuf::from(value)),
                "sslkey" => key = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        let mut either = |name: &str, in_url: Option<PathBuf>, in_file: &Option<PathBuf>| match (
            in_url, in_file,
        ) {
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "store.{name}_file: also given as ssl{} in store.url; give one",
                    if name == "ca" { "rootcert" } else { name }
                ));
                None
            }
            (Some(u), None) => Some(u),
            (None, f) => f.clone(),
        };
        let ca = match (either("ca", root.clone(), &files.ca), root.is_some()) {
            (Some(p), true) => Some(("store.url sslrootcert", p)),
            (Some(p), false) => Some(("store.ca_file", p)),
            (None, _) => None,
        };
        let cert = either("cert", cert, &files.cert);
        let key = either("key", key, &files.key);
        let mode = mode.unwrap_or(if ca.is_some() {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        match mode {
            SslMode::VerifyCa | SslMode::VerifyFull if ca.is_none() => errors.push(format!(
                "store.url: sslmode={} needs the CA that signs the server's certificate \
                 (store.ca_file or sslrootcert)",
                mode.as_str()
            )),
            SslMode::Disable | SslMode::Prefer if ca.is_some() => errors.push(format!(
                "store.ca_file: sslmode={} never checks the server's certificate; \
                 use verify-full (or verify-ca), or remove the CA",
                mode.as_str()
            )),
            _ => {}
        }
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                errors.push(
                    "store.cert_file, store.key_file: a client certificate and its key go \
                     together"
                        .into(),
                );
                None
            }
        };
        if client.is_some() && mode == SslMode::Disable {
            errors.push("store.cert_file: set, but sslmode=disable".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(PgTls {
            url,
            mode,
            ca,
            client,
        })
    }

    /// The URL without libpq's TLS options, as tokio-postgres parses it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the server is authenticated by its certificate.
    pub fn authenticates_server(&self) -> bool {
        self.ca.is_some()
    }

    /// The rustls configuration (files read now); `None` for `disable`.
    fn connector(&self) -> Result<Option<RustlsConnect>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("store TLS: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.ca {
            None => Arc::new(Unverified(provider)),
            Some((key, path)) => {
                let mut roots = RootCertStore::empty();
                for cert in crate::tls::read_certs(key, path).map_err(|e| e.to_string())? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
                match self.mode {
                    SslMode::VerifyFull => webpki,
                    _ => Arc::new(AnyName(webpki)),
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs =
                    crate::tls::read_certs("store.cert_file", cert).map_err(|e| e.to_string())?;
                let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "store.key_file: {}: not a PEM file with a PRIVATE KEY ({e})",
                        key.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(certs, private)
                    .map_err(|e| format!("store.cert_file, store.key_file: {e}"))?
            }
        };
        Ok(Some(RustlsConnect {
            config: Arc::new(config),
            ca: self.ca.as_ref().map(|(_, p)| p.clone()),
        }))
    }

    /// Reads the files as a connection would: every problem with them, for the config check.
    pub fn file_problems(&self) -> Option<String> {
        self.connector().err()
    }
}

/// Everything a connection to the PostgreSQL store is made from. Cheap to clone.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    tls: PgTls,
    connector: Option<RustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("sslmode", &self.tls.mode)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// The target `url` and `files` describe (the TLS files read now), with `password` when
    /// given, a connect timeout when the URL has none, and the collector's application name.
    pub fn new(
        url: &str,
        password: Option<&str>,
        files: &PgTlsFiles,
    ) -> Result<PgTarget, StoreError> {
        let tls = PgTls::settle(url, files).map_err(|e| StoreError::Url(e.join("; ")))?;
        let mut config: postgres::Config = tls
            .url
            .parse()
            .map_err(|e| StoreError::Url(format!("{e}")))?;
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(super::sql::PG_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("alarmnet-collector");
        }
        config.ssl_mode(match tls.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let connector = tls.connector().map_err(StoreError::Tls)?;
        Ok(PgTarget {
            config,
            tls,
            connector,
        })
    }

    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    pub fn sslmode(&self) -> SslMode {
        self.tls.mode
    }

    /// Whether the server is authenticated by its certificate (`verify-ca`, `verify-full`,
    /// `require` with a CA).
    pub fn authenticates_server(&self) -> bool {
        self.tls.authenticates_server()
    }

    /// Connects (blocking: never on an async worker).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.connector {
            None => self.config.connect(postgres::NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        }
    }
}

/// `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a TLS handshake with the server failed, in the operator's terms.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the server's certificate is not trusted: {why}")]
    NotTrusted { why: String },
    #[error(
        "the server's certificate is not valid for the host name {host}{presented} \
         (sslmode=verify-full: connect by a name the certificate holds)"
    )]
    WrongName { host: String, presented: String },
    #[error("{0}")]
    Other(io::Error),
}

impl HandshakeError {
    fn new(e: io::Error, host: &str, ca: Option<&Path>) -> HandshakeError {
        let Some(rustls::Error::InvalidCertificate(cert)) =
            e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        else {
            return HandshakeError::Other(e);
        };
        let ca = ca.map_or_else(|| "?".into(), |p| p.display().to_string());
        let why = match cert {
            CertificateError::NotValidForName => {
                return HandshakeError::WrongName {
                    host: host.into(),
                    presented: String::new(),
                };
            }
            CertificateError::NotValidForNameContext { presented, .. } => {
                return HandshakeError::WrongName {
                    host: host.into(),
                    presented: format!(" (it names {})", presented.join(", ")),
                };
            }
            CertificateError::UnknownIssuer => format!("it is not signed by the CA in {ca}"),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet".into()
            }
            other => format!("{other:?} (CA {ca})"),
        };
        HandshakeError::NotTrusted { why }
    }
}

/// Makes the TLS handshake of each connection (tokio-postgres's `MakeTlsConnect`).
#[derive(Clone)]
struct RustlsConnect {
    config: Arc<ClientConfig>,
    ca: Option<PathBuf>,
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = Handshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, Self::Error> {
        Ok(Handshake {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name: ServerName::try_from(domain.to_owned())?,
            ca: self.ca.clone(),
        })
    }
}

/// One connection's handshake.
struct Handshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    ca: Option<PathBuf>,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = RustlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let host = self.name.to_str().into_owned();
            self.connector
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
                .map_err(|e| HandshakeError::new(e, &host, self.ca.as_deref()))
        })
    }
}

/// A connection after the handshake.
struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// `verify-ca` (and `require` with a CA): the chain must lead to the CA; the name is not
/// checked. webpki checks the name last, after the chain, so a name error means the
/// chain was good.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA, as libpq: encryption against listeners on the
/// wire, any certificate accepted (the handshake's signatures are still checked, so the
/// server holds the key of the certificate it shows).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_e2e::Postgres;

    fn settle(url: &str, ca: Option<&str>) -> Result<PgTls, Vec<String>> {
        let files = PgTlsFiles {
            ca: ca.map(PathBuf::from),
            ..PgTlsFiles::default()
        };
        PgTls::settle(url, &files)
    }

    #[test]
    fn sslmode_defaults_to_verify_full_with_a_ca_and_prefer_without() {
        let base = "postgres://u@db.example:5432/alarmnet";
        let t = settle(&format!("{base}?connect_timeout=5"), None).expect("no TLS options");
        assert_eq!(
            (t.mode, t.url()),
            (SslMode::Prefer, &*format!("{base}?connect_timeout=5"))
        );
        let t = settle(base, Some("/etc/ca.pem")).expect("a CA");
        assert_eq!(t.mode, SslMode::VerifyFull);
        let t = settle(
            &format!("{base}?sslmode=verify-ca&sslrootcert=%2Fetc%2Fpg%20ca.pem&connect_timeout=5"),
            None,
        )
        .expect("libpq's options");
        assert_eq!(t.mode, SslMode::VerifyCa);
        assert_eq!(
            t.ca,
            Some(("store.url sslrootcert", "/etc/pg ca.pem".into()))
        );
        assert_eq!(t.url(), format!("{base}?connect_timeout=5"));
        let t = settle(&format!("{base}?sslmode=require"), None).expect("require");
        assert!(!t.authenticates_server());
    }

    #[test]
    fn bad_tls_combinations_are_each_named() {
        let base = "postgres://u@db.example/alarmnet";
        let problems = |url: &str, ca| settle(url, ca).expect_err("refused");
        assert_eq!(
            problems(&format!("{base}?sslmode=allow"), None),
            ["store.url: sslmode=allow is not supported \
              (disable, prefer, require, verify-ca or verify-full)"]
        );
        assert!(
            problems(&format!("{base}?sslmode=verify-full"), None)[0]
                .starts_with("store.url: sslmode=verify-full needs the CA"),
        );
        assert!(
            problems(&format!("{base}?sslmode=disable"), Some("/ca.pem"))[0]
                .starts_with("store.ca_file: sslmode=disable never checks"),
        );
        assert!(
            problems(&format!("{base}?sslrootcert=/a.pem"), Some("/b.pem"))[0]
                .starts_with("store.ca_file: also given as sslrootcert"),
        );
        let e = PgTls::settle(
            base,
            &PgTlsFiles {
                cert: Some("/c.pem".into()),
                ..PgTlsFiles::default()
            },
        )
        .expect_err("a certificate without its key");
        assert!(e[0].contains("go together"), "{e:?}");
        // An unreadable CA is found when the files are read, as the config check does.
        let t = settle(base, Some("/nonexistent/ca.pem")).expect("settled");
        let e = t.file_problems().expect("unreadable");
        assert!(e.starts_with("store.ca_file: /nonexistent/ca.pem: "), "{e}");
    }

    /// `url` (from the TLS-only server) with `query` added and the host name `host`
    /// reached at 127.0.0.1.
    fn url_as(url: &str, host: &str, query: &str) -> String {
        let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
        format!("{url}?hostaddr=127.0.0.1&{query}")
    }

    fn connect_err(url: &str, ca: Option<&Path>) -> String {
        let files = PgTlsFiles {
            ca: ca.map(Path::to_owned),
            ..PgTlsFiles::default()
        };
        let target = PgTarget::new(url, None, &files).expect("target");
        match target.connect() {
            Ok(_) => panic!("{url} connected"),
            Err(e) => StoreError::from(e).to_string(),
        }
    }

    #[test]
    fn over_tls_the_store_works_with_the_right_ca_and_checks_the_name() {
        let server = Postgres::shared_tls();
        let ca = server.ca_file().expect("a TLS server");
        let url = server.create_database();
        let files = PgTlsFiles {
            ca: Some(ca.to_owned()),
            ..PgTlsFiles::default()
        };
        // No sslmode with a CA: verify-full; the certificate names 127.0.0.1.
        let target = PgTarget::new(&url, None, &files).expect("target");
        assert_eq!(target.sslmode(), SslMode::VerifyFull);
        let db = super::super::Db::connect(&target).expect("connect and migrate over TLS");
        assert!(matches!(
            db.try_lease("active", "a", 60_000).expect("a write"),
            super::super::lease::LeaseTry::Taken { .. }
        ));
        let mut client = target.connect().expect("connect");
        let row = client
            .query_one(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .expect("pg_stat_ssl");
        assert!(row.get::<_, bool>(0), "the session is encrypted");
        assert!(row.get::<_, String>(1).starts_with("TLSv1."));

        // verify-ca takes the right CA's certificate under another name; verify-full not.
        let other_name = url_as(&url, "pg.invalid", "sslmode=verify-ca");
        PgTarget::new(&other_name, None, &files)
            .expect("target")
            .connect()
            .expect("verify-ca ignores the name");
        let e = connect_err(&url_as(&url, "pg.invalid", "sslmode=verify-full"), Some(ca));
        assert!(
            e.contains("certificate is not valid for the host name pg.invalid (it names"),
            "{e}"
        );
    }

    #[test]
    fn plain_wrong_ca_and_no_tls_at_the_server_are_refused_with_the_cause() {
        let server = Postgres::shared_tls();
        let url = server.create_database();
        // The server takes no plain connection (hostnossl … reject).
        let e = connect_err(&format!("{url}?sslmode=disable"), None);
        assert!(
            e.contains("rejects connection") && e.contains("no encryption"),
            "{e}"
        );

        // A CA that did not sign the server's certificate.
        let dir = tempfile::tempdir().expect("tempdir");
        let wrong = dir.path().join("wrong-ca.pem");
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        std::fs::write(&wrong, c.cert.pem()).expect("write");
        let e = connect_err(&url, Some(&wrong));
        assert!(
            e.contains(&format!(
                "the server's certificate is not trusted: it is not signed by the CA in {}",
                wrong.display()
            )),
            "{e}"
        );

        // A server without TLS and sslmode=require.
        let plain = Postgres::shared().create_database();
        let e = connect_err(&format!("{plain}?sslmode=require"), None);
        assert!(e.contains("server does not support TLS"), "{e}");
        // prefer (the default without a CA) still reaches it, in clear.
        PgTarget::new(&plain, None, &PgTlsFiles::default())
            .expect("target")
            .connect()
            .expect("prefer falls back to plain");
    }
}
