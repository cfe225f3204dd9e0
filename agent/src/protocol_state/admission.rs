//! Command admission (protocol.md, "Signed commands"): whether a `cmd` the agent received
//! may run now, and if not, why. Pure: the caller passes the topic, the decoded command,
//! the MQTT retain flag and the wall clock; the answer says what to run or refuse, and
//! whether the seen ids changed and must be saved before anything runs.
//!
//! The checks, in order (the first that fails names the refusal):
//! 1. the signature verifies under a trusted key (`unsigned`, `unknown_key`,
//!    `bad_signature`); an unsigned command passes only with `allow_unsigned`;
//! 2. the message was not delivered as retained (`retained`);
//! 3. its id was not seen before (`replayed`);
//! 4. `exp` has not passed (`expired`), `ts` is not ahead of the agent's clock by more than
//!    `max_skew` (`future`), and it was not made before what the seen ids can vouch for
//!    (`replayed`);
//! 5. a `test` of a kind whose procedure forbids remote starts (`remote_forbidden`), or of
//!    a kind already running (`busy`), is refused; both are answered with a `test` receipt
//!    `result: error` so a drill learns why.
//!
//! Design: `rebirth` and `check` go through the same admission as `test`. They are harmless
//! in themselves, but an unsigned flood would otherwise make the agent publish births and
//! run every check on demand. The id of every command that passed the signature check is
//! remembered, refused or not, so a captured command cannot be tried again later.

use std::collections::BTreeSet;
use std::time::Duration;

use alarmnet_protocol::signing::{TrustedKeys, VerifyError};
use alarmnet_protocol::{CmdAction, CmdId, Command, Name};

use super::seen::SeenIds;

/// How long the id of an accepted unsigned command is remembered (it carries no `exp`).
pub const UNSIGNED_KEEP: Duration = Duration::from_secs(3600);
/// At most this many refusals are logged per [`LOG_WINDOW`]; the rest are counted only.
pub const LOG_BURST: u32 = 20;
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

/// The `[commands]` settings: which collector keys the agent trusts and how strict it is.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    pub keys: TrustedKeys,
    /// Run unsigned commands too (a demo or a lab only).
    pub allow_unsigned: bool,
    /// How far a command's `ts` may be ahead of the agent's clock.
    pub max_skew: Duration,
}

impl Default for CommandSettings {
    /// Trusts nobody: every command is refused.
    fn default() -> Self {
        Self {
            keys: TrustedKeys::default(),
            allow_unsigned: false,
            max_skew: Duration::from_secs(30),
        }
    }
}

impl CommandSettings {
    /// True when no command can ever pass (no keys, unsigned not allowed).
    pub fn refuses_everything(&self) -> bool {
        self.keys.is_empty() && !self.allow_unsigned
    }
}

/// Why a command was refused. The reason codes are stable (counters, logs, docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    Unsigned,
    UnknownKey,
    BadSignature,
    Retained,
    Replayed,
    Expired,
    Future,
    RemoteForbidden,
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::Unsigned,
        Refusal::UnknownKey,
        Refusal::BadSignature,
        Refusal::Retained,
        Refusal::Replayed,
        Refusal::Expired,
        Refusal::Future,
        Refusal::RemoteForbidden,
        Refusal::Busy,
    ];

    /// The reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Retained => "retained",
            Refusal::Replayed => "replayed",
            Refusal::Expired => "expired",
            Refusal::Future => "future",
            Refusal::RemoteForbidden => "remote_forbidden",
            Refusal::Busy => "busy",
        }
    }

    /// The heartbeat metric that counts it: `cmd_refused_<reason>`.
    pub fn metric(self) -> &'static str {
        match self {
            Refusal::Unsigned => "cmd_refused_unsigned",
            Refusal::UnknownKey => "cmd_refused_unknown_key",
            Refusal::BadSignature => "cmd_refused_bad_signature",
            Refusal::Retained => "cmd_refused_retained",
            Refusal::Replayed => "cmd_refused_replayed",
            Refusal::Expired => "cmd_refused_expired",
            Refusal::Future => "cmd_refused_future",
            Refusal::RemoteForbidden => "cmd_refused_remote_forbidden",
            Refusal::Busy => "cmd_refused_busy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Unsigned => Refusal::Unsigned,
            VerifyError::UnknownKey(_) => Refusal::UnknownKey,
            VerifyError::BadSignature => Refusal::BadSignature,
        }
    }
}

/// What to do with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it. For a `test`, the kind now counts as running until [`Admission::test_finished`].
    Run {
        id: CmdId,
        action: CmdAction,
    },
    Refuse(Refused),
}

/// A refused command: its id, why, a detail for the log, and whether to log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: CmdId,
    pub refusal: Refusal,
    /// One line for the log (never key material).
    pub detail: String,
    /// For `remote_forbidden` and `busy`: the test kind to answer with an error receipt.
    pub answer: Option<Name>,
    /// Whether to log it (at most [`LOG_BURST`] per [`LOG_WINDOW`]), and how many refusals
    /// went unlogged since the last one that was logged.
    pub log: Option<u64>,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// The seen ids changed: save them before running anything.
    pub remembered: bool,
}

/// Admission state: the settings, the seen ids, the tests running, the counters.
#[derive(Debug, Clone)]
pub struct Admission {
    settings: CommandSettings,
    /// Test kinds whose procedure forbids remote starts.
    local_only: BTreeSet<Name>,
    seen: SeenIds,
    running: BTreeSet<Name>,
    accepted: u64,
    refused: [u64; Refusal::ALL.len()],
    log_window_start: u64,
    logged_in_window: u32,
    unlogged: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Admission {
    pub fn new(settings: CommandSettings, local_only: BTreeSet<Name>, seen: SeenIds) -> Self {
        Self {
            settings,
            local_only,
            seen,
            running: BTreeSet::new(),
            accepted: 0,
            refused: [0; Refusal::ALL.len()],
            log_window_start: 0,
            logged_in_window: 0,
            unlogged: 0,
        }
    }

    pub fn settings(&self) -> &CommandSettings {
        &self.settings
    }

    /// The seen ids, to be saved when a verdict says `remembered`.
    pub fn seen(&self) -> &SeenIds {
        &self.seen
    }

    /// Decides on `command`, received on `topic` (retained or not) at `now` (ms).
    pub fn admit(&mut self, topic: &str, command: &Command, retained: bool, now: u64) -> Verdict {
        let id = command.id.clone();
        let skew = ms(self.settings.max_skew);
        // 1. Who made it.
        let seal = match (&command.seal, self.settings.allow_unsigned) {
            (None, true) => None,
            (None, false) => {
                return self.refuse(id, Refusal::Unsigned, "unsigned".into(), None, false, now);
            }
            (Some(seal), _) => match self.settings.keys.verify(topic, command) {
                Ok(()) => Some(seal),
                Err(e) => {
                    let detail = e.to_string();
                    return self.refuse(id, e.into(), detail, None, false, now);
                }
            },
        };
        let keep_until = match seal {
            Some(s) => s.exp.saturating_add(skew),
            None => now.saturating_add(ms(UNSIGNED_KEEP)),
        };
        let test_kind = match &command.action {
            CmdAction::Test { test } => Some(test.clone()),
            _ => None,
        };
        // 2. How it arrived.
        if retained {
            let remembered = self.seen.remember(&id, keep_until, now);
            return self.refuse(
                id,
                Refusal::Retained,
                "delivered as a retained message".into(),
                None,
                remembered,
                now,
            );
        }
        // 3. Seen before.
        if self.seen.contains(&id, now) {
            return self.refuse(
                id,
                Refusal::Replayed,
                "id seen before".into(),
                None,
                false,
                now,
            );
        }
        // 4. When it was made.
        if let Some(s) = seal {
            if now > s.exp {
                // Kept only while a clock stepping back by `max_skew` could make it valid.
                let remembered = self.seen.remember(&id, keep_until, now);
                let detail = format!("expired {} ms ago", now - s.exp);
                return self.refuse(id, Refusal::Expired, detail, None, remembered, now);
            }
            if s.ts > now.saturating_add(skew) {
                let remembered = self.seen.remember(&id, keep_until, now);
                let detail = format!("made {} ms ahead of this node's clock", s.ts - now);
                return self.refuse(id, Refusal::Future, detail, None, remembered, now);
            }
            if self.seen.may_have_forgotten(s.ts, keep_until) {
                let remembered = self.seen.remember(&id, keep_until, now);
                let detail = "made before the seen ids this node can vouch for".into();
                return self.refuse(id, Refusal::Replayed, detail, None, remembered, now);
            }
        }
        let remembered = self.seen.remember(&id, keep_until, now);
        // 5. What it asks for.
        if let Some(kind) = test_kind {
            if self.local_only.contains(&kind) {
                let detail = format!("test `{kind}` may only be started by its local schedule");
                return self.refuse(
                    id,
                    Refusal::RemoteForbidden,
                    detail,
                    Some(kind),
                    remembered,
                    now,
                );
            }
            if !self.test_started(&kind) {
                let detail = format!("a test of kind `{kind}` is already running");
                return self.refuse(id, Refusal::Busy, detail, Some(kind), remembered, now);
            }
        }
        self.accepted += 1;
        Verdict {
            decision: Decision::Run {
                id,
                action: command.action.clone(),
            },
            remembered,
        }
    }

    fn refuse(
        &mut self,
        id: CmdId,
        refusal: Refusal,
        detail: String,
        answer: Option<Name>,
        remembered: bool,
        now: u64,
    ) -> Verdict {
        self.refused[refusal.index()] += 1;
        let log = self.log_permit(now);
        Verdict {
            decision: Decision::Refuse(Refused {
                id,
                refusal,
                detail,
                answer,
                log,
            }),
            remembered,
        }
    }

    /// `Some(unlogged before)` when this refusal may be logged.
    fn log_permit(&mut self, now: u64) -> Option<u64> {
        if now.saturating_sub(self.log_window_start) >= ms(LOG_WINDOW) {
            self.log_window_start = now;
            self.logged_in_window = 0;
        }
        if self.logged_in_window < LOG_BURST {
            self.logged_in_window += 1;
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }

    /// Marks a test kind as running; false (and nothing changes) if it already runs.
    pub fn test_started(&mut self, kind: &Name) -> bool {
        self.running.insert(kind.clone())
    }

    /// A test of this kind has finished.
    pub fn test_finished(&mut self, kind: &Name) {
        self.running.remove(kind);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.refused[refusal.index()]
    }

    /// The counters for a heartbeat's `metrics`, cumulative since start: `cmd_accepted` and
    /// `cmd_refused` (all reasons) always, `cmd_refused_<reason>` once it is not zero.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![
            ("cmd_accepted", self.accepted as f64),
            ("cmd_refused", self.refused.iter().sum::<u64>() as f64),
        ];
        out.extend(
            Refusal::ALL
                .iter()
                .filter(|r| self.refused(**r) > 0)
                .map(|r| (r.metric(), self.refused(*r) as f64)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_protocol::KeyId;
    use alarmnet_protocol::signing::CommandKey;

    const TOPIC: &str = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd";
    const NOW: u64 = 1_789_700_000_000;
    const MIN: u64 = 60_000;

    fn key(kid: &str, seed: u8) -> CommandKey {
        CommandKey::from_seed(KeyId::new(kid).expect("kid"), [seed; 32])
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("name")
    }

    fn test(k: &CommandKey, id: &str, kind: &str, ts: u64, exp: u64) -> Command {
        let action = CmdAction::Test { test: name(kind) };
        k.seal(TOPIC, CmdId::new(id).expect("id"), action, ts, exp)
    }

    fn admission(allow_unsigned: bool) -> (Admission, CommandKey) {
        let k = key("centre-2026", 7);
        let settings = CommandSettings {
            keys: TrustedKeys::new([(k.kid().clone(), k.public_key())]),
            allow_unsigned,
            max_skew: Duration::from_secs(30),
        };
        let a = Admission::new(settings, [name("sound")].into(), SeenIds::default());
        (a, k)
    }

    fn refusal(v: &Verdict) -> Option<Refusal> {
        match &v.decision {
            Decision::Refuse(r) => Some(r.refusal),
            Decision::Run { .. } => None,
        }
    }

    #[test]
    fn a_valid_signed_command_runs_once() {
        let (mut a, k) = admission(false);
        let cmd = test(&k, "d-1", "silent", NOW, NOW + 5 * MIN);
        let v = a.admit(TOPIC, &cmd, false, NOW + 1_000);
        assert!(v.remembered);
        assert_eq!(
            v.decision,
            Decision::Run {
                id: cmd.id.clone(),
                action: cmd.action.clone()
            }
        );
        // A QoS 1 redelivery, or a replay by anyone.
        let again = a.admit(TOPIC, &cmd, false, NOW + 2_000);
        assert_eq!(refusal(&again), Some(Refusal::Replayed));
        assert!(!again.remembered);
        assert_eq!((a.accepted(), a.refused(Refusal::Replayed)), (1, 1));
    }

    #[test]
    fn each_forgery_is_refused_for_its_reason() {
        let (mut a, k) = admission(false);
        let now = NOW;
        let exp = now + 5 * MIN;
        let mut unsigned = test(&k, "u-1", "silent", now, exp);
        unsigned.seal = None;
        let mut tampered = test(&k, "t-1", "silent", now, exp);
        tampered.seal.as_mut().expect("seal").exp += 1;
        let cases = [
            (unsigned, false, Refusal::Unsigned, false),
            (
                test(&key("rogue", 9), "r-1", "silent", now, exp),
                false,
                Refusal::UnknownKey,
                false,
            ),
            (
                test(&key("centre-2026", 9), "w-1", "silent", now, exp),
                false,
                Refusal::BadSignature,
                false,
            ),
            (tampered, false, Refusal::BadSignature, false),
            (
                test(&k, "e-1", "silent", now - 10 * MIN, now - 1),
                false,
                Refusal::Expired,
                true,
            ),
            (
                test(&k, "f-1", "silent", now + 31_000, now + 10 * MIN),
                false,
                Refusal::Future,
                true,
            ),
            (
                test(&k, "k-1", "silent", now, exp),
                true,
                Refusal::Retained,
                true,
            ),
            (
                test(&k, "s-1", "sound", now, exp),
                false,
                Refusal::RemoteForbidden,
                true,
            ),
        ];
        for (cmd, retained, expected, remembered) in cases {
            let v = a.admit(TOPIC, &cmd, retained, now);
            assert_eq!(refusal(&v), Some(expected), "{cmd:?}");
            assert_eq!(v.remembered, remembered, "{expected:?}");
        }
        // The ids that passed the signature check are remembered: trying them again is a
        // replay (the retained one, the future one, the sound test).
        for id in ["k-1", "f-1", "s-1"] {
            let cmd = test(&k, id, "silent", now, exp);
            // Same id, freshly signed: still refused, the id is what counts.
            assert_eq!(
                refusal(&a.admit(TOPIC, &cmd, false, now)),
                Some(Refusal::Replayed)
            );
        }
        let counts: Vec<_> = Refusal::ALL.iter().map(|r| a.refused(*r)).collect();
        assert_eq!(counts, vec![1, 1, 2, 1, 3, 1, 1, 1, 0]);
        assert_eq!(a.accepted(), 0);
    }

    #[test]
    fn skew_is_allowed_up_to_max_skew_and_expiry_is_inclusive() {
        let (mut a, k) = admission(false);
        let ok = test(&k, "a", "check-only", NOW + 30_000, NOW + MIN);
        assert_eq!(refusal(&a.admit(TOPIC, &ok, false, NOW)), None);
        a.test_finished(&name("check-only"));
        let last_instant = test(&k, "b", "check-only", NOW - MIN, NOW);
        assert_eq!(refusal(&a.admit(TOPIC, &last_instant, false, NOW)), None);
    }

    #[test]
    fn a_second_test_of_a_running_kind_is_busy_and_answered() {
        let (mut a, k) = admission(false);
        let first = test(&k, "d-1", "silent", NOW, NOW + MIN);
        assert_eq!(refusal(&a.admit(TOPIC, &first, false, NOW)), None);
        let second = test(&k, "d-2", "silent", NOW, NOW + MIN);
        let v = a.admit(TOPIC, &second, false, NOW);
        let Decision::Refuse(r) = v.decision else {
            panic!("busy expected")
        };
        assert_eq!(r.refusal, Refusal::Busy);
        assert_eq!(r.answer, Some(name("silent")));
        assert!(r.detail.contains("already running"), "{}", r.detail);
        // Another kind may run meanwhile; the same kind again once the first finished.
        let other = test(&k, "d-3", "battery", NOW, NOW + MIN);
        assert_eq!(refusal(&a.admit(TOPIC, &other, false, NOW)), None);
        a.test_finished(&name("silent"));
        let third = test(&k, "d-4", "silent", NOW, NOW + MIN);
        assert_eq!(refusal(&a.admit(TOPIC, &third, false, NOW)), None);
    }

    #[test]
    fn rebirth_and_check_need_a_signature_too() {
        let (mut a, k) = admission(false);
        for (id, action) in [("c-1", CmdAction::Rebirth), ("c-2", CmdAction::Check)] {
            let mut cmd = k.seal(TOPIC, CmdId::new(id).expect("id"), action, NOW, NOW + MIN);
            assert_eq!(refusal(&a.admit(TOPIC, &cmd, false, NOW)), None);
            cmd.seal = None;
            cmd.id = CmdId::new(format!("{id}-unsigned")).expect("id");
            assert_eq!(
                refusal(&a.admit(TOPIC, &cmd, false, NOW)),
                Some(Refusal::Unsigned)
            );
        }
    }

    #[test]
    fn unsigned_commands_run_only_where_allowed_and_still_once() {
        let (mut a, _) = admission(true);
        let cmd = Command {
            id: CmdId::new("c-1").expect("id"),
            action: CmdAction::Rebirth,
            seal: None,
        };
        assert_eq!(refusal(&a.admit(TOPIC, &cmd, false, NOW)), None);
        assert_eq!(
            refusal(&a.admit(TOPIC, &cmd, false, NOW + 1)),
            Some(Refusal::Replayed)
        );
        let retained = Command {
            id: CmdId::new("c-2").expect("id"),
            ..cmd.clone()
        };
        assert_eq!(
            refusal(&a.admit(TOPIC, &retained, true, NOW)),
            Some(Refusal::Retained)
        );
        // The unsigned id is forgotten after UNSIGNED_KEEP.
        let later = NOW + ms(UNSIGNED_KEEP) + 1;
        assert_eq!(refusal(&a.admit(TOPIC, &cmd, false, later)), None);
    }

    #[test]
    fn a_lost_memory_refuses_commands_made_before_it() {
        let (a, k) = admission(false);
        let mut seen = SeenIds::default();
        seen.lost_memory(NOW + 30_000);
        let mut a = Admission::new(a.settings().clone(), BTreeSet::new(), seen);
        let old = test(&k, "d-old", "silent", NOW - 1_000, NOW + 5 * MIN);
        assert_eq!(
            refusal(&a.admit(TOPIC, &old, false, NOW)),
            Some(Refusal::Replayed)
        );
        let new = test(&k, "d-new", "silent", NOW + 30_000, NOW + 5 * MIN);
        assert_eq!(refusal(&a.admit(TOPIC, &new, false, NOW)), None);
    }

    #[test]
    fn no_keys_and_no_unsigned_refuses_everything() {
        let mut a = Admission::new(
            CommandSettings::default(),
            BTreeSet::new(),
            SeenIds::default(),
        );
        assert!(a.settings().refuses_everything());
        let k = key("centre-2026", 7);
        let cmd = test(&k, "d-1", "silent", NOW, NOW + MIN);
        assert_eq!(
            refusal(&a.admit(TOPIC, &cmd, false, NOW)),
            Some(Refusal::UnknownKey)
        );
    }

    #[test]
    fn refusals_are_logged_at_most_a_burst_per_window_and_counted_always() {
        let (mut a, _) = admission(false);
        let cmd = Command {
            id: CmdId::new("x").expect("id"),
            action: CmdAction::Check,
            seal: None,
        };
        let logs: Vec<Option<u64>> = (0..LOG_BURST + 5)
            .map(|_| match a.admit(TOPIC, &cmd, false, NOW).decision {
                Decision::Refuse(r) => r.log,
                Decision::Run { .. } => panic!("refused expected"),
            })
            .collect();
        assert!(logs[..LOG_BURST as usize].iter().all(|l| *l == Some(0)));
        assert!(logs[LOG_BURST as usize..].iter().all(Option::is_none));
        let next = a.admit(TOPIC, &cmd, false, NOW + ms(LOG_WINDOW));
        let Decision::Refuse(r) = next.decision else {
            panic!("refused")
        };
        assert_eq!(r.log, Some(5), "the next window reports what went unlogged");
        assert_eq!(a.refused(Refusal::Unsigned), u64::from(LOG_BURST) + 6);
    }

    #[test]
    fn metrics_carry_the_totals_and_every_reason_seen() {
        let (mut a, k) = admission(false);
        assert_eq!(
            a.metrics(),
            vec![("cmd_accepted", 0.0), ("cmd_refused", 0.0)]
        );
        let cmd = test(&k, "d-1", "silent", NOW, NOW + MIN);
        a.admit(TOPIC, &cmd, false, NOW);
        a.admit(TOPIC, &cmd, false, NOW);
        a.admit(TOPIC, &cmd, true, NOW);
        assert_eq!(
            a.metrics(),
            vec![
                ("cmd_accepted", 1.0),
                ("cmd_refused", 2.0),
                ("cmd_refused_retained", 1.0),
                ("cmd_refused_replayed", 1.0),
            ]
        );
    }
}
