//! Free loopback ports and unique ids, safe for tests running in parallel in one process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ports already handed out by this process: the OS may offer the same free port twice
/// before anyone binds it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago and that no other caller in this process
/// has been given.
///
/// Design: a server binding port 0 itself would be race-free, but Mosquitto and
/// VictoriaMetrics cannot report the port they bound, and restart tests need the same port
/// again. Another process may still take the port in between; that is rare on loopback.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local address of a bound socket")
            .port();
        drop(listener);
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found in 1000 attempts");
}

/// `prefix` + process id + a counter: unique across the tests of one run, and valid both as
/// an MQTT client id and as a protocol identifier (`[A-Za-z0-9_-]{1,64}`).
///
/// Panics if `prefix` contains other characters or is too long to leave room.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "unique_id prefix {prefix:?} may only contain A-Z a-z 0-9 _ -"
    );
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix}-{}-{n}", std::process::id());
    assert!(id.len() <= 64, "unique_id prefix {prefix:?} is too long");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn ids_are_unique_and_valid() {
        let a = unique_id("node");
        let b = unique_id("node");
        assert_ne!(a, b);
        assert!(a.starts_with("node-"));
        alarmnet_protocol::NodeId::new(a).expect("a valid node id");
    }
}
