//! The PKI's certificates checked the way their users check them: rustls's WebPKI verifier
//! (as the agent and collector verify, with the CRL as Mosquitto applies it) and an X.509
//! parser for the names and the CRL's contents.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use alarmnet_protocol::NodeId;
use jiff::Timestamp;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::*;

use super::*;

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn crl_der(dir: &Path) -> CertificateRevocationListDer<'static> {
    CertificateRevocationListDer::from_pem_file(dir.join("ca.crl")).expect("ca.crl")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(&dir.join("ca.crt"))).expect("CA certificate");
    Arc::new(roots)
}

/// Verifies a client certificate as a TLS server with the CA and its CRL would.
fn verify_client(dir: &Path, cert: &Path) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
        .with_crls(vec![crl_der(dir)])
        .build()
        .expect("verifier");
    verifier
        .verify_client_cert(&der(cert), &[], UnixTime::now())
        .map(|_| ())
}

fn cn_of(cert: &CertificateDer<'_>) -> String {
    let (_, x509) = X509Certificate::from_der(cert).expect("x509");
    x509.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a CN")
        .to_owned()
}

fn node_ids(ids: &[&str]) -> Vec<NodeId> {
    ids.iter().map(|i| NodeId::new(*i).expect("id")).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_node_certificate_verifies_against_the_ca_and_names_the_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let now = Timestamp::now();
    Ca::init(&dir, "test CA", CA_DAYS, now).expect("init");
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    // Issue from a freshly opened CA: the issuer is read back from ca.crt and ca.key.
    let mut ca = Ca::open(&dir).expect("open");
    let results = ca
        .issue_nodes(&node_ids(&["lz-cg-s001", "lz-cg-s002"]), LEAF_DAYS, now)
        .expect("issue");
    assert!(results.iter().all(|r| matches!(r, Issued::New { .. })));
    let (key, cert) = ca.paths(Kind::Node, "lz-cg-s001");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(cn_of(&der(&cert)), "lz-cg-s001");
    verify_client(&dir, &cert).expect("a node certificate verifies against the CA");

    // Signed by this CA, not just any: another CA's roots refuse it.
    let other = tmp.path().join("other");
    Ca::init(&other, "other CA", CA_DAYS, now).expect("other CA");
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&other), provider())
        .build()
        .expect("verifier");
    assert!(
        verifier
            .verify_client_cert(&der(&cert), &[], UnixTime::now())
            .is_err()
    );

    // The key belongs to the certificate: rustls accepts the pair as a client identity.
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(&dir))
        .with_client_auth_cert(vec![der(&cert)], key_der)
        .expect("matching certificate and key");
}

#[test]
fn the_broker_certificate_serves_its_names_and_addresses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = Timestamp::now();
    let mut ca = Ca::init(dir, "test CA", CA_DAYS, now).expect("init");
    let ip: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    ca.issue_broker(&["mqtt.example.cn".into()], &[ip], LEAF_DAYS, now)
        .expect("broker");
    let cert = der(&ca.paths(Kind::Broker, "mqtt.example.cn").1);
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
            .build()
            .expect("verifier");
    use rustls::client::danger::ServerCertVerifier as _;
    for name in ["mqtt.example.cn", "127.0.0.1"] {
        let server = ServerName::try_from(name).expect("name");
        verifier
            .verify_server_cert(&cert, &[], &server, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("other.example.cn").expect("name");
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &other, &[], UnixTime::now())
            .is_err()
    );
    assert!(matches!(
        ca.issue_broker(&["bad host!".into()], &[], LEAF_DAYS, now),
        Err(PkiError::Invalid(_))
    ));
    assert!(matches!(
        ca.issue_broker(&[], &[], LEAF_DAYS, now),
        Err(PkiError::Invalid(_))
    ));
}

#[test]
fn a_revoked_serial_is_in_the_crl_and_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = Timestamp::now();
    let mut ca = Ca::init(dir, "test CA", CA_DAYS, now).expect("init");
    ca.issue_nodes(&node_ids(&["n-1", "n-2"]), LEAF_DAYS, now)
        .expect("issue");
    let (key1, cert1) = ca.paths(Kind::Node, "n-1");
    let (_, cert2) = ca.paths(Kind::Node, "n-2");
    let saved = dir.join("n-1-copy.crt");
    std::fs::copy(&cert1, &saved).expect("copy");
    verify_client(dir, &cert1).expect("valid before revocation");

    let revoked = ca.revoke(Some("n-1"), None, now).expect("revoke");
    assert_eq!(revoked.len(), 1);
    let serial = revoked[0].serial.clone();

    // The CRL names the serial, and is signed by the CA.
    let crl = crl_der(dir);
    let (_, parsed) = CertificateRevocationList::from_der(&crl).expect("crl");
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string().replace(':', "").to_uppercase())
        .collect();
    assert_eq!(listed, vec![serial.clone()]);
    let ca_der = der(&dir.join("ca.crt"));
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("ca");
    parsed
        .verify_signature(ca_cert.public_key())
        .expect("CRL signed by the CA");

    // A verifier with the CRL refuses the revoked certificate, not the other node's.
    let err = verify_client(dir, &saved).expect_err("revoked");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{err:?}"
    );
    verify_client(dir, &cert2).expect("another node is still valid");

    // The revoked certificate moved aside, its key is gone, and the node can get a new one.
    assert!(!cert1.exists() && !key1.exists());
    assert!(dir.join(format!("revoked/n-1-{serial}.crt")).exists());
    let mut ca = Ca::open(dir).expect("open");
    let again = ca
        .issue_nodes(&node_ids(&["n-1", "n-2"]), LEAF_DAYS, now)
        .expect("issue again");
    assert!(matches!(&again[0], Issued::New { serial: s } if *s != serial));
    assert_eq!(again[1], Issued::Kept);
    verify_client(dir, &cert1).expect("the new certificate is valid");
    assert!(matches!(
        ca.revoke(Some("nobody"), None, now),
        Err(PkiError::NothingToRevoke(_))
    ));
    // By serial, the old one is already revoked: nothing to do.
    assert!(matches!(
        ca.revoke(None, Some(&serial), now),
        Err(PkiError::NothingToRevoke(_))
    ));
}

#[test]
fn keys_and_certificates_are_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = Timestamp::now();
    Ca::init(dir, "test CA", CA_DAYS, now).expect("init");
    let ca_key = std::fs::read(dir.join("ca.key")).expect("key");
    assert!(matches!(
        Ca::init(dir, "test CA", CA_DAYS, now),
        Err(PkiError::Exists(p)) if p == dir.join("ca.key")
    ));
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("key"), ca_key);

    let mut ca = Ca::open(dir).expect("open");
    ca.issue_client(Kind::Collector, "alarmnet-collector-1", LEAF_DAYS, now)
        .expect("collector");
    let (key, _) = ca.paths(Kind::Collector, "alarmnet-collector-1");
    let before = std::fs::read(&key).expect("key");
    assert!(matches!(
        ca.issue_client(Kind::Collector, "alarmnet-collector-1", LEAF_DAYS, now),
        Err(PkiError::Exists(_))
    ));
    assert_eq!(std::fs::read(&key).expect("key"), before);
    assert!(matches!(
        ca.issue_client(Kind::Collector, "bad id", LEAF_DAYS, now),
        Err(PkiError::Invalid(_))
    ));
    assert!(matches!(
        Ca::open(&dir.join("nothing")),
        Err(PkiError::NoCa(_))
    ));
}

#[test]
fn commands_report_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let list = tmp.path().join("nodes.csv");
    std::fs::write(&list, "node,site,region\nlz-cg-s001,lz-chengguan,lanzhou\n").expect("list");
    let now = Timestamp::now();
    let run = |command: PkiCommand| {
        let mut out = Vec::new();
        execute(command, &mut out, now).map(|()| String::from_utf8_lossy(&out).into_owned())
    };
    run(PkiCommand::Init {
        dir: dir.clone(),
        name: "alarmnet CA".into(),
        days: CA_DAYS,
    })
    .expect("init");
    let report = run(PkiCommand::Nodes {
        dir: dir.clone(),
        nodes: list.clone(),
        days: LEAF_DAYS,
    })
    .expect("nodes");
    assert!(
        report.contains("1 certificates issued, 0 nodes kept"),
        "{report}"
    );
    let listing = run(PkiCommand::List { dir: dir.clone() }).expect("list");
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" node ") && l.contains("valid") && l.ends_with("lz-cg-s001")),
        "{listing}"
    );

    let acl = run(PkiCommand::Acl {
        nodes: list.clone(),
        prefix: "alarmnet/v1".into(),
        collector: vec!["alarmnet-collector-1".into()],
    })
    .expect("acl");
    assert!(
        acl.contains("topic write alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb\n"),
        "{acl}"
    );

    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "lz-cg-s001,only-two\n").expect("list");
    let err = run(PkiCommand::Nodes {
        dir: dir.clone(),
        nodes: bad,
        days: LEAF_DAYS,
    })
    .expect_err("bad list");
    assert!(
        err.to_string()
            .contains("line 1: expected `node,site,region`"),
        "{err}"
    );
    let err = run(PkiCommand::Acl {
        nodes: list,
        prefix: "alarmnet/#".into(),
        collector: vec!["alarmnet-collector-1".into()],
    })
    .expect_err("bad prefix");
    assert!(matches!(err, PkiCommandError::Usage(_)), "{err}");
    let err = run(PkiCommand::Revoke {
        dir,
        node: Some("lz-cg-s999".into()),
        serial: None,
    })
    .expect_err("unknown node");
    assert!(
        err.to_string()
            .contains("node lz-cg-s999: nothing to revoke"),
        "{err}"
    );
}

#[test]
fn crl_is_re_signed_with_a_new_number_for_a_year() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let now = Timestamp::now();
    Ca::init(dir, "test CA", CA_DAYS, now).expect("init");
    let read = || {
        let der = crl_der(dir);
        let (_, crl) = CertificateRevocationList::from_der(&der).expect("crl");
        let number = crl.crl_number().expect("a CRL number").to_string();
        let last = crl.last_update().timestamp();
        let next = crl.next_update().expect("a next update").timestamp();
        (number, last, next, crl.iter_revoked_certificates().count())
    };
    let (first, _, _, revoked) = read();
    assert_eq!((first.as_str(), revoked), ("1", 0));
    let mut out = Vec::new();
    execute(
        PkiCommand::Crl {
            dir: dir.to_owned(),
        },
        &mut out,
        now,
    )
    .expect("crl");
    let (second, last, next, _) = read();
    assert_eq!(second, "2");
    let days = (next - last) / 86_400;
    assert_eq!(days, i64::from(ca::CRL_DAYS), "valid for {days} days");
    assert!(last <= now.as_second() && now.as_second() - last < 3600);
}
