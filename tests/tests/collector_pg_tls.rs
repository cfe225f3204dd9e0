//! The collector on a PostgreSQL store that takes only TLS: the real binary connects with
//! `[store] ca_file` (sslmode verify-full by default) and every one of its sessions is
//! encrypted; with a CA that did not sign the server's certificate it does not start and
//! says why; a verify mode without a CA is a configuration error (exit 64) before any
//! connection.

mod collector_support;

use std::path::Path;
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Postgres, Process, binary, free_port};
use collector_support::{Collector, config_text, workdir};

/// Runs the collector on `store` (the `[store]` lines) until it exits; returns its exit
/// code and output.
async fn run_until_exit(broker: &Mosquitto, dir: &Path, store: &str) -> (Option<i32>, String) {
    let config = dir.join("collector.toml");
    let text = config_text(broker, dir, "pgtls-refused", free_port(), "").replacen(
        "[store]\n",
        &format!("[store]\n{store}\n"),
        1,
    );
    std::fs::write(&config, text).expect("write config");
    let mut process = Process::builder(binary("alarmnet-collector"))
        .name("collector:pgtls-refused")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .spawn();
    let status = process
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the collector gives up within 30 s");
    (status.code(), process.output_tail(20))
}

#[tokio::test]
async fn the_collector_uses_tls_to_postgres_and_refuses_an_untrusted_server() {
    let broker = Mosquitto::builder().start().await;
    let server = Postgres::start_tls();
    let ca = server
        .ca_file()
        .expect("a TLS server")
        .display()
        .to_string();
    let url = server.create_database();
    let db = url.rsplit('/').next().expect("a database name").to_owned();

    let dir = workdir();
    let store = format!("url = \"{url}\"\nca_file = \"{ca}\"");
    let mut collector = Collector::start_with_store(&broker, dir.path(), &store, "", &[]).await;
    let sessions = server.psql(
        &db,
        "SELECT count(*) FILTER (WHERE s.ssl) || '|' || count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'alarmnet-collector'",
    );
    let (encrypted, plain) = sessions.trim().split_once('|').expect("two counts");
    assert!(
        encrypted.parse::<u32>().expect("a count") >= 3,
        "{sessions}"
    );
    assert_eq!(plain, "0", "no plain session: {sessions}");
    collector.process.terminate(Duration::from_secs(10)).await;

    // A CA that did not sign the server's certificate: the collector does not start.
    let wrong = dir.path().join("wrong-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    std::fs::write(&wrong, other.cert.pem()).expect("write");
    let store = format!("url = \"{url}\"\nca_file = \"{}\"", wrong.display());
    let (code, output) = run_until_exit(&broker, dir.path(), &store).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("the server's certificate is not trusted: it is not signed by the CA in"),
        "{output}"
    );

    // Plain TCP: the server refuses it.
    let store = format!("url = \"{url}?sslmode=disable\"");
    let (code, output) = run_until_exit(&broker, dir.path(), &store).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("no encryption"), "{output}");

    // verify-full without a CA is a configuration error, before any connection.
    let store = format!("url = \"{url}?sslmode=verify-full\"");
    let (code, output) = run_until_exit(&broker, dir.path(), &store).await;
    assert_eq!(code, Some(64), "{output}");
    assert!(
        output.contains("store.url: sslmode=verify-full needs the CA"),
        "{output}"
    );
}
