//! `alarmnet-collector pki`: the network's certificate authority for MQTT over TLS. It
//! creates the CA, the broker's server certificate, the collector's and every node's client
//! certificate (CN = node id, the identity the broker's ACL pins to its topics), revokes
//! certificates into the CRL Mosquitto reads, and generates that ACL from the node list.
//!
//! # Layout
//! - [`ca`]: the CA directory: keys, certificates, the index of serials, the CRL.
//! - [`nodes`]: the node list file (`node,site,region` per line) and the generated ACL.
//! - this file: the subcommands, printing what they did.
//!
//! Design: the CA is a directory of files on the operator's machine, not part of the running
//! collector: the CA key never needs to be on a server. Revocation goes through a CRL, the
//! one mechanism Mosquitto 2.0 offers (`crlfile`).

pub mod ca;
pub mod nodes;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use alarmnet_protocol::{CollectorId, Prefix};
use clap::{Args, Subcommand};
use jiff::Timestamp;

pub use ca::{Ca, Entry, Issued, Kind, PkiError};
pub use nodes::{NodeEntry, parse_node_list, read_node_list, render_acl};

/// Default validity of the CA: 25 years (a new CA means a visit to every site).
pub const CA_DAYS: u32 = 9125;
/// Default validity of broker, collector and node certificates: 10 years.
pub const LEAF_DAYS: u32 = 3650;

/// The `pki` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PkiCommand {
    /// Create the network's CA in DIR: ca.key (0600), ca.crt, an empty ca.crl, index.json.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "alarmnet CA")]
        name: String,
        #[arg(long, default_value_t = CA_DAYS)]
        days: u32,
    },
    /// Issue a collector's client certificate (CN = its mqtt.client_id).
    Collector(ClientArgs),
    /// Issue a client certificate for a bridging broker (CN = its bridge remote_clientid).
    Bridge(ClientArgs),
    /// Issue the broker's server certificate with every name clients connect to.
    Broker {
        #[arg(long)]
        dir: PathBuf,
        /// A DNS name of the broker (repeatable); the first is the CN.
        #[arg(long)]
        host: Vec<String>,
        /// An IP address of the broker (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: u32,
    },
    /// Issue one client certificate per node of a node list (CN = node id); nodes that
    /// already have one are kept.
    Nodes {
        #[arg(long)]
        dir: PathBuf,
        /// The node list: `node,site,region` (or just `node`) per line, `#` comments.
        #[arg(long)]
        nodes: PathBuf,
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: u32,
    },
    /// Revoke a node's certificate (or any certificate by serial) and write the new CRL.
    #[command(group = clap::ArgGroup::new("which").required(true))]
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        /// Revoke every certificate of this node that is not revoked yet.
        #[arg(long, group = "which")]
        node: Option<String>,
        /// Revoke the certificate with this serial (hex, as `pki list` shows it).
        #[arg(long, group = "which")]
        serial: Option<String>,
    },
    /// Sign the CRL again (it is valid for 365 days; Mosquitto refuses every client once it
    /// has expired).
    Crl {
        #[arg(long)]
        dir: PathBuf,
    },
    /// List every certificate issued, with its serial and state.
    List {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the Mosquitto ACL for a node list: each node writes and reads only its own
    /// topics; each collector reads all and writes commands, alerts and its state.
    Acl {
        #[arg(long)]
        nodes: PathBuf,
        #[arg(long, default_value = alarmnet_protocol::DEFAULT_PREFIX)]
        prefix: String,
        /// A collector's client id (repeatable).
        #[arg(long, default_value = "alarmnet-collector-1")]
        collector: Vec<String>,
    },
}

/// A client certificate's target.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// The client id, which becomes the certificate's CN and the broker username.
    #[arg(long, default_value = "alarmnet-collector-1")]
    pub id: String,
    #[arg(long, default_value_t = LEAF_DAYS)]
    pub days: u32,
}

/// Why a `pki` command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiCommandError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Nodes(#[from] nodes::NodeListError),
    #[error("{0}")]
    Usage(String),
}

/// Runs a `pki` command, printing what it did; errors go to stderr. Exit code 0, 1 on a
/// failure, 64 on bad input (a node list, an id, a prefix).
pub fn run(command: PkiCommand) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match execute(command, &mut out, Timestamp::now()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alarmnet-collector pki: {e}");
            match e {
                PkiCommandError::Usage(_)
                | PkiCommandError::Nodes(nodes::NodeListError::Invalid { .. })
                | PkiCommandError::Pki(PkiError::Invalid(_)) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs a `pki` command at `now`, writing its report (or the ACL) to `out`.
pub fn execute(
    command: PkiCommand,
    out: &mut dyn std::io::Write,
    now: Timestamp,
) -> Result<(), PkiCommandError> {
    // A report that cannot be printed (closed stdout) does not undo the work done.
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    match command {
        PkiCommand::Init { dir, name, days } => {
            let ca = Ca::init(&dir, &name, days, now)?;
            say(format!(
                "created CA {name:?} in {}: ca.key (keep it offline), ca.crt (install on the broker and every node), ca.crl",
                ca.dir().display()
            ));
        }
        PkiCommand::Collector(a) | PkiCommand::Bridge(a) if a.id.is_empty() => {
            return Err(PkiCommandError::Usage("--id must not be empty".into()));
        }
        PkiCommand::Collector(a) => client(Kind::Collector, a, &mut say, now)?,
        PkiCommand::Bridge(a) => client(Kind::Bridge, a, &mut say, now)?,
        PkiCommand::Broker {
            dir,
            host,
            ip,
            days,
        } => {
            let mut ca = Ca::open(&dir)?;
            let serial = ca.issue_broker(&host, &ip, days, now)?;
            let name = host
                .first()
                .cloned()
                .or_else(|| ip.first().map(ToString::to_string))
                .unwrap_or_default();
            let (key, cert) = ca.paths(Kind::Broker, &name);
            say(format!(
                "issued broker certificate {} (key {}), serial {serial}",
                cert.display(),
                key.display()
            ));
        }
        PkiCommand::Nodes { dir, nodes, days } => {
            let list = read_node_list(&nodes)?;
            let mut ca = Ca::open(&dir)?;
            let ids: Vec<_> = list.iter().map(|n| n.node.clone()).collect();
            let results = ca.issue_nodes(&ids, days, now)?;
            let issued = results
                .iter()
                .filter(|r| matches!(r, Issued::New { .. }))
                .count();
            for (id, r) in ids.iter().zip(&results) {
                if let Issued::New { serial } = r {
                    say(format!("issued {id} serial {serial}"));
                }
            }
            say(format!(
                "{issued} certificates issued, {} nodes kept their existing one, in {}",
                results.len() - issued,
                dir.join("nodes").display()
            ));
        }
        PkiCommand::Revoke { dir, node, serial } => {
            let mut ca = Ca::open(&dir)?;
            let revoked = ca.revoke(node.as_deref(), serial.as_deref(), now)?;
            for e in &revoked {
                say(format!(
                    "revoked {} {} serial {}",
                    e.kind.as_str(),
                    e.name,
                    e.serial
                ));
            }
            say(format!(
                "wrote {}: install it as the broker's crlfile and reload the broker (SIGHUP; a restart also drops open connections)",
                dir.join("ca.crl").display()
            ));
        }
        PkiCommand::Crl { dir } => {
            let mut ca = Ca::open(&dir)?;
            let path = ca.write_crl(now)?;
            say(format!(
                "wrote {} (valid for {} days)",
                path.display(),
                ca::CRL_DAYS
            ));
        }
        PkiCommand::List { dir } => {
            let ca = Ca::open(&dir)?;
            say(format!(
                "{:<34} {:<9} {:<8} {:<20} NAME",
                "SERIAL", "KIND", "STATE", "EXPIRES"
            ));
            for e in ca.entries() {
                let state = if e.revoked.is_some() {
                    "revoked"
                } else if e.not_after <= now {
                    "expired"
                } else {
                    "valid"
                };
                say(format!(
                    "{:<34} {:<9} {:<8} {:<20} {}",
                    e.serial,
                    e.kind.as_str(),
                    state,
                    e.not_after.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    e.name
                ));
            }
        }
        PkiCommand::Acl {
            nodes,
            prefix,
            collector,
        } => {
            let prefix = Prefix::new(prefix)
                .map_err(|e| PkiCommandError::Usage(format!("--prefix: {e}")))?;
            let collectors = collector
                .iter()
                .map(|c| {
                    CollectorId::new(c.as_str())
                        .map_err(|e| PkiCommandError::Usage(format!("--collector {c:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let list = read_node_list(&nodes)?;
            say(render_acl(&prefix, &collectors, &list)
                .trim_end()
                .to_owned());
        }
    }
    Ok(())
}

fn client(
    kind: Kind,
    a: ClientArgs,
    say: &mut impl FnMut(String),
    now: Timestamp,
) -> Result<(), PkiCommandError> {
    let mut ca = Ca::open(&a.dir)?;
    let serial = ca.issue_client(kind, &a.id, a.days, now)?;
    let (key, cert) = ca.paths(kind, &a.id);
    say(format!(
        "issued {} certificate {} (key {}), CN {}, serial {serial}",
        kind.as_str(),
        cert.display(),
        key.display(),
        a.id
    ));
    Ok(())
}
