//! The CA directory: the network's CA key and certificate, the certificates issued under it
//! (an index of every serial, what it was issued to and whether it is revoked) and the CRL
//! Mosquitto reads (`crlfile`).
//!
//! ```text
//! DIR/ca.key  ca.crt  ca.crl  index.json
//! DIR/broker/{host}.key .crt      server certificates (SANs: host names, IP addresses)
//! DIR/collector/{id}.key .crt     client certificates, CN = the collector's client id
//! DIR/bridge/{id}.key .crt        client certificates of bridging brokers
//! DIR/nodes/{node}.key .crt       client certificates, CN = node id
//! DIR/revoked/{name}-{serial}.crt revoked certificates, kept for the record
//! ```
//! Private keys are written 0600 and never overwritten. Keys are ECDSA P-256, signatures
//! SHA-256: what rustls (the agent and collector) and OpenSSL (Mosquitto) both speak.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

/// How long the CRL is valid. Mosquitto (OpenSSL) refuses **every** client certificate once
/// the CRL's next update has passed, so `pki crl` must re-sign it before then.
pub const CRL_DAYS: u32 = 365;

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.crt";
const CA_CRL: &str = "ca.crl";
const INDEX: &str = "index.json";

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists: refusing to overwrite a key or certificate")]
    Exists(PathBuf),
    #[error("{0}: no CA here (create one with `alarmnet-collector pki init --dir DIR`)")]
    NoCa(PathBuf),
    #[error("{path}: unreadable index: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: nothing to revoke (no certificate in the index that is not revoked already)")]
    NothingToRevoke(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Certificate { what, source }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ca,
    Broker,
    Collector,
    Bridge,
    Node,
}

impl Kind {
    /// Its name in reports and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ca => "ca",
            Kind::Broker => "broker",
            Kind::Collector => "collector",
            Kind::Bridge => "bridge",
            Kind::Node => "node",
        }
    }

    /// The subdirectory its key and certificate go to.
    fn subdir(self) -> &'static str {
        match self {
            Kind::Ca => ".",
            Kind::Broker => "broker",
            Kind::Collector => "collector",
            Kind::Bridge => "bridge",
            Kind::Node => "nodes",
        }
    }
}

/// One issued certificate, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub kind: Kind,
    /// The CN: node id, collector id, broker host name.
    pub name: String,
    #[serde(with = "rfc3339")]
    pub issued: Timestamp,
    #[serde(with = "rfc3339")]
    pub not_after: Timestamp,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

/// Timestamps in the index as RFC 3339 text, for people reading it.
mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use jiff::Timestamp;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// The number of the last CRL signed (RFC 5280 cRLNumber, monotonic).
    crl_number: u64,
    certificates: Vec<Entry>,
}

/// What `issue_nodes` did for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    New {
        serial: String,
    },
    /// The node already has a key or certificate in `nodes/`: left untouched.
    Kept,
}

/// An opened CA directory.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    index: Index,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("certificates", &self.index.certificates.len())
            .finish_non_exhaustive()
    }
}

fn to_time(t: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| PkiError::Invalid(format!("time {t}: {e}")))
}

fn after_days(now: Timestamp, days: u32) -> Result<Timestamp, PkiError> {
    if days == 0 {
        return Err(PkiError::Invalid(
            "validity: --days must be at least 1".into(),
        ));
    }
    now.checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .map_err(|e| PkiError::Invalid(format!("validity of {days} days: {e}")))
}

/// A random positive serial of 16 bytes (RFC 5280 allows up to 20).
fn new_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, so the hex is the same everywhere.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    let hex = bytes.iter().map(|b| format!("{b:02X}")).collect();
    (SerialNumber::from_slice(&bytes), hex)
}

fn serial_from_hex(hex: &str) -> Result<SerialNumber, PkiError> {
    let bad = || PkiError::Invalid(format!("serial {hex:?} is not hexadecimal"));
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    Ok(SerialNumber::from_slice(&bytes))
}

fn make_dir(path: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(path))
}

/// Writes a new file; fails if it exists (never overwrites).
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists(path.to_owned())
            } else {
                PkiError::Io {
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

/// Replaces a file atomically (index, CRL): a crash leaves the old or the new one.
fn replace(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(PkiError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

/// A file name for a certificate's name (node ids and host names are safe; IP addresses
/// of IPv6 carry `:`).
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Ca {
    /// Creates a CA in `dir` (created 0700 if missing): key, self-signed certificate valid
    /// for `days`, an empty index and an empty CRL. Refuses if a CA key or certificate is
    /// there already.
    pub fn init(dir: &Path, name: &str, days: u32, now: Timestamp) -> Result<Ca, PkiError> {
        make_dir(dir)?;
        let (key_path, cert_path) = (dir.join(CA_KEY), dir.join(CA_CERT));
        refuse_existing(&[&key_path, &cert_path, &dir.join(INDEX)])?;
        if name.trim().is_empty() {
            return Err(PkiError::Invalid("the CA's name must not be empty".into()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "alarmnet");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let not_after = after_days(now, days)?;
        params.not_before = to_time(now - SignedDuration::from_hours(1))?;
        params.not_after = to_time(not_after)?;
        let (serial, hex) = new_serial();
        params.serial_number = Some(serial);
        let key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("CA certificate"))?;
        write_new(&key_path, &key.serialize_pem(), 0o600)?;
        write_new(&cert_path, &cert.pem(), 0o644)?;
        let mut ca = Ca {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            index: Index::default(),
        };
        ca.index.certificates.push(Entry {
            serial: hex,
            kind: Kind::Ca,
            name: name.to_owned(),
            issued: now,
            not_after,
            revoked: None,
        });
        ca.write_crl(now)?;
        Ok(ca)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Ca, PkiError> {
        let (key_path, cert_path) = (dir.join(CA_KEY), dir.join(CA_CERT));
        if !key_path.exists() || !cert_path.exists() {
            return Err(PkiError::NoCa(dir.to_owned()));
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(cert_err(format!("{}", key_path.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(cert_err(format!("{}", cert_path.display())))?;
        let index_path = dir.join(INDEX);
        let index = match fs::read_to_string(&index_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| PkiError::Index {
                path: index_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io(&index_path)(e)),
        };
        Ok(Ca {
            dir: dir.to_owned(),
            issuer,
            index,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every certificate issued, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.index.certificates
    }

    /// The key and certificate paths of `name` of `kind`.
    pub fn paths(&self, kind: Kind, name: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(kind.subdir()).join(file_stem(name));
        (base.with_extension("key"), base.with_extension("crt"))
    }

    /// Issues a leaf certificate: a new key, CN = `name`, signed by the CA.
    fn issue(
        &mut self,
        kind: Kind,
        name: &str,
        sans: Vec<SanType>,
        days: u32,
        now: Timestamp,
    ) -> Result<String, PkiError> {
        let (key_path, cert_path) = self.paths(kind, name);
        refuse_existing(&[&key_path, &cert_path])?;
        make_dir(&self.dir.join(kind.subdir()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match kind {
            // A broker's certificate also serves as its client identity on a bridge.
            Kind::Broker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let not_after = after_days(now, days)?;
        params.not_before = to_time(now - SignedDuration::from_hours(1))?;
        params.not_after = to_time(not_after)?;
        let (serial, hex) = new_serial();
        params.serial_number = Some(serial);
        let key = KeyPair::generate().map_err(cert_err(format!("key for {name}")))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err(format!("certificate for {name}")))?;
        write_new(&key_path, &key.serialize_pem(), 0o600)?;
        write_new(&cert_path, &cert.pem(), 0o644)?;
        self.index.certificates.push(Entry {
            serial: hex.clone(),
            kind,
            name: name.to_owned(),
            issued: now,
            not_after,
            revoked: None,
        });
        Ok(hex)
    }

    /// A client certificate for a collector (CN = its MQTT client id) or a bridge.
    pub fn issue_client(
        &mut self,
        kind: Kind,
        id: &str,
        days: u32,
        now: Timestamp,
    ) -> Result<String, PkiError> {
        if !matches!(kind, Kind::Collector | Kind::Bridge) {
            return Err(PkiError::Invalid(format!(
                "{} is not a client kind",
                kind.as_str()
            )));
        }
        alarmnet_protocol::CollectorId::new(id)
            .map_err(|e| PkiError::Invalid(format!("id {id:?}: {e}")))?;
        let serial = self.issue(kind, id, Vec::new(), days, now)?;
        self.save_index()?;
        Ok(serial)
    }

    /// The broker's server certificate, with every host name and address clients use.
    pub fn issue_broker(
        &mut self,
        hosts: &[String],
        ips: &[IpAddr],
        days: u32,
        now: Timestamp,
    ) -> Result<String, PkiError> {
        let mut sans = Vec::new();
        for h in hosts {
            let valid = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(PkiError::Invalid(format!("--host {h:?} is not a DNS name")));
            }
            let name = h
                .clone()
                .try_into()
                .map_err(cert_err(format!("--host {h}")))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let cn = hosts
            .first()
            .cloned()
            .or_else(|| ips.first().map(ToString::to_string))
            .ok_or_else(|| {
                PkiError::Invalid("a broker needs at least one --host or --ip".into())
            })?;
        let serial = self.issue(Kind::Broker, &cn, sans, days, now)?;
        self.save_index()?;
        Ok(serial)
    }

    /// One client certificate per node (CN = node id). Nodes that already have a key or a
    /// certificate in `nodes/` are kept as they are, so a grown list can be issued again.
    pub fn issue_nodes(
        &mut self,
        nodes: &[alarmnet_protocol::NodeId],
        days: u32,
        now: Timestamp,
    ) -> Result<Vec<Issued>, PkiError> {
        after_days(now, days)?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (key, cert) = self.paths(Kind::Node, node.as_str());
            if key.exists() || cert.exists() {
                out.push(Issued::Kept);
                continue;
            }
            match self.issue(Kind::Node, node.as_str(), Vec::new(), days, now) {
                Ok(serial) => out.push(Issued::New { serial }),
                Err(e) => {
                    // Record what was issued before the failure, then report it.
                    self.save_index()?;
                    return Err(e);
                }
            }
        }
        // Design: the index is written once per batch, not per certificate: it lists every
        // certificate ever issued, and rewriting it per node would be quadratic.
        self.save_index()?;
        Ok(out)
    }

    /// Revokes every live certificate of node `node`, or the one with `serial`, and writes
    /// the new CRL. The revoked certificate moves to `revoked/`; its key is deleted (it is
    /// of no use any more), so a new certificate can be issued under the same name.
    pub fn revoke(
        &mut self,
        node: Option<&str>,
        serial: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Entry>, PkiError> {
        let what = match (node, serial) {
            (Some(n), None) => format!("node {n}"),
            (None, Some(s)) => format!("serial {s}"),
            _ => return Err(PkiError::Invalid("name either a node or a serial".into())),
        };
        let matches = |e: &Entry| {
            e.revoked.is_none()
                && e.kind != Kind::Ca
                && match (node, serial) {
                    (Some(n), _) => e.kind == Kind::Node && e.name == n,
                    (_, Some(s)) => e.serial.eq_ignore_ascii_case(s),
                    _ => false,
                }
        };
        let hits: Vec<usize> = (0..self.index.certificates.len())
            .filter(|&i| matches(&self.index.certificates[i]))
            .collect();
        if hits.is_empty() {
            return Err(PkiError::NothingToRevoke(what));
        }
        let revoked_dir = self.dir.join("revoked");
        make_dir(&revoked_dir)?;
        let mut done = Vec::new();
        for i in hits {
            let entry = &mut self.index.certificates[i];
            entry.revoked = Some(now);
            let entry = entry.clone();
            let (key, cert) = self.paths(entry.kind, &entry.name);
            // Files are never overwritten and only revocation removes them, so the files
            // under a name belong to the newest certificate issued under it.
            let newest = self
                .index
                .certificates
                .iter()
                .rev()
                .find(|e| e.kind == entry.kind && e.name == entry.name)
                .is_some_and(|e| e.serial == entry.serial);
            if newest && cert.exists() {
                let to =
                    revoked_dir.join(format!("{}-{}.crt", file_stem(&entry.name), entry.serial));
                fs::rename(&cert, &to).map_err(io(&cert))?;
                match fs::remove_file(&key) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&key)(e)),
                }
            }
            done.push(entry);
        }
        self.save_index()?;
        self.write_crl(now)?;
        Ok(done)
    }

    /// Signs a new CRL of every revoked certificate, valid for [`CRL_DAYS`].
    pub fn write_crl(&mut self, now: Timestamp) -> Result<PathBuf, PkiError> {
        let revoked_certs = self
            .index
            .certificates
            .iter()
            .filter_map(|e| e.revoked.map(|at| (e, at)))
            .map(|(e, at)| {
                Ok(RevokedCertParams {
                    serial_number: serial_from_hex(&e.serial)?,
                    revocation_time: to_time(at)?,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        self.index.crl_number += 1;
        let params = CertificateRevocationListParams {
            this_update: to_time(now - SignedDuration::from_mins(5))?,
            next_update: to_time(after_days(now, CRL_DAYS)?)?,
            crl_number: SerialNumber::from(self.index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(cert_err("CRL"))?;
        let pem = crl.pem().map_err(cert_err("CRL"))?;
        let path = self.dir.join(CA_CRL);
        replace(&path, &pem, 0o644)?;
        self.save_index()?;
        Ok(path)
    }

    fn save_index(&self) -> Result<(), PkiError> {
        let path = self.dir.join(INDEX);
        let text = serde_json::to_string_pretty(&self.index).map_err(|source| PkiError::Index {
            path: path.clone(),
            source,
        })?;
        replace(&path, &(text + "\n"), 0o644)
    }
}
