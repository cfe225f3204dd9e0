//! The command ids an agent has seen, each kept until a time after which a replay of it can
//! no longer pass the expiry check, so a replayed command is refused even after a restart.
//!
//! Design: the set is bounded ([`MAX_SEEN`] ids). When it is full the id that would be
//! forgotten soonest goes, and its keep-until time raises a floor: a signed command that
//! would have been forgotten by then is refused as a possible replay, since the set can no
//! longer tell. The same idea covers a lost memory (a damaged file, or a spool directory
//! whose file was deleted): every command signed before `not_before` is refused, because any
//! command the lost memory held was signed before it. Pure: time comes in as an argument;
//! [`crate::seen_file`] keeps it on disk in the text form written here.

use std::collections::HashMap;
use std::fmt::Write as _;

use alarmnet_protocol::CmdId;

/// The most ids remembered; far more than a node receives within any command's lifetime.
pub const MAX_SEEN: usize = 10_000;

/// The first line of the file form.
const HEADER: &str = "# alarmnet-agent: command ids seen, each with the time (ms) it is kept until";

/// Why a file's text could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct SeenTextError {
    pub line: usize,
    pub what: String,
}

/// The seen command ids, with what the set can no longer vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenIds {
    /// Id → the time (ms since the epoch) it is kept until.
    keep: HashMap<CmdId, u64>,
    /// The largest keep-until time of an id dropped because the set was full.
    forgotten_until: u64,
    /// Signed commands made (`ts`) before this may have been seen by a memory now lost.
    not_before: u64,
    cap: usize,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self::with_capacity(MAX_SEEN)
    }
}

impl SeenIds {
    /// An empty set that remembers at most `cap` ids (at least one).
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            keep: HashMap::new(),
            forgotten_until: 0,
            not_before: 0,
            cap: cap.max(1),
        }
    }

    /// Whether `id` is remembered at `now` (its time has not passed).
    pub fn contains(&self, id: &CmdId, now: u64) -> bool {
        self.keep.get(id).is_some_and(|until| *until > now)
    }

    pub fn len(&self) -> usize {
        self.keep.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// Whether a signed command made at `ts`, which would be kept until `keep_until`, may
    /// have been seen and forgotten (dropped from a full set, or held by a lost memory).
    pub fn may_have_forgotten(&self, ts: u64, keep_until: u64) -> bool {
        ts < self.not_before || keep_until <= self.forgotten_until
    }

    /// Records that the memory of earlier runs is lost: commands signed before
    /// `not_before` are refused from now on.
    pub fn lost_memory(&mut self, not_before: u64) {
        self.not_before = self.not_before.max(not_before);
    }

    /// The `not_before` floor (0 when nothing was lost).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// Drops the ids whose time has passed.
    pub fn prune(&mut self, now: u64) {
        self.keep.retain(|_, until| *until > now);
    }

    /// Remembers `id` until `keep_until`. Returns whether the set changed (and so should
    /// be saved). An id whose time has already passed is not kept: its expiry refuses it.
    pub fn remember(&mut self, id: &CmdId, keep_until: u64, now: u64) -> bool {
        self.prune(now);
        if keep_until <= now {
            return false;
        }
        if let Some(until) = self.keep.get_mut(id) {
            let changed = keep_until > *until;
            *until = (*until).max(keep_until);
            return changed;
        }
        while self.keep.len() >= self.cap {
            let Some((oldest, until)) = self
                .keep
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(id, until)| (id.clone(), *until))
            else {
                break;
            };
            self.keep.remove(&oldest);
            self.forgotten_until = self.forgotten_until.max(until);
        }
        self.keep.insert(id.clone(), keep_until);
        true
    }

    /// The file form: a header, the floors, then one `keep_until id` line per id, oldest
    /// first.
    pub fn to_text(&self) -> String {
        let mut ids: Vec<(&CmdId, &u64)> = self.keep.iter().collect();
        ids.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
        let mut out = String::with_capacity(64 + ids.len() * 40);
        let _ = writeln!(out, "{HEADER}");
        let _ = writeln!(out, "v 1");
        let _ = writeln!(out, "forgotten_until {}", self.forgotten_until);
        let _ = writeln!(out, "not_before {}", self.not_before);
        for (id, until) in ids {
            let _ = writeln!(out, "{until} {id}");
        }
        out
    }

    /// Reads the file form back into a set of capacity `cap`, dropping ids whose time has
    /// passed by `now`. Any line that does not fit the form makes the whole text invalid:
    /// a file that is wrong in one place cannot be trusted in the others.
    pub fn from_text(text: &str, cap: usize, now: u64) -> Result<Self, SeenTextError> {
        let mut set = Self::with_capacity(cap);
        let mut version = false;
        let bad = |line: usize, what: String| SeenTextError { line, what };
        let number = |n: usize, v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(n, format!("{v:?} is not a time in ms")))
        };
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(' ') else {
                return Err(bad(n, "expected two fields".into()));
            };
            if !version {
                if (k, v) != ("v", "1") {
                    return Err(bad(n, "expected the version line `v 1`".into()));
                }
                version = true;
                continue;
            }
            match k {
                "forgotten_until" => set.forgotten_until = number(n, v)?,
                "not_before" => set.not_before = number(n, v)?,
                until => {
                    let until = number(n, until)?;
                    let id = CmdId::new(v).map_err(|e| bad(n, e.to_string()))?;
                    set.remember(&id, until, now);
                }
            }
        }
        if !version {
            return Err(bad(0, "no version line: empty or truncated".into()));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CmdId {
        CmdId::new(s).expect("id")
    }

    #[test]
    fn ids_are_kept_until_their_time_then_forgotten() {
        let mut s = SeenIds::default();
        assert!(s.remember(&id("a"), 2_000, 1_000));
        assert!(
            !s.remember(&id("a"), 1_500, 1_000),
            "an earlier time changes nothing"
        );
        assert!(
            s.remember(&id("a"), 2_500, 1_000),
            "a later time extends it"
        );
        assert!(s.contains(&id("a"), 1_000));
        assert!(!s.contains(&id("a"), 2_500));
        assert!(
            !s.remember(&id("late"), 900, 1_000),
            "already past: not kept"
        );
        assert!(!s.contains(&id("late"), 0));
        s.prune(2_499);
        assert_eq!(s.len(), 1);
        s.prune(2_500);
        assert!(s.is_empty());
    }

    #[test]
    fn a_full_set_drops_the_soonest_and_refuses_what_it_cannot_vouch_for() {
        let mut s = SeenIds::with_capacity(2);
        s.remember(&id("a"), 5_000, 0);
        s.remember(&id("b"), 3_000, 0);
        assert!(!s.may_have_forgotten(0, 3_000));
        s.remember(&id("c"), 9_000, 0);
        assert_eq!(s.len(), 2);
        assert!(!s.contains(&id("b"), 0), "the id kept until soonest went");
        assert!(s.contains(&id("a"), 0) && s.contains(&id("c"), 0));
        // A replay of `b` (or anything that would have gone no later) is suspect...
        assert!(s.may_have_forgotten(0, 3_000));
        assert!(s.may_have_forgotten(0, 2_000));
        // ...a newer command is not.
        assert!(!s.may_have_forgotten(0, 3_001));
    }

    #[test]
    fn a_lost_memory_refuses_everything_signed_before_the_floor() {
        let mut s = SeenIds::default();
        s.lost_memory(10_000);
        s.lost_memory(5_000);
        assert_eq!(s.not_before(), 10_000, "the floor never goes down");
        assert!(s.may_have_forgotten(9_999, u64::MAX));
        assert!(!s.may_have_forgotten(10_000, 20_000));
    }

    #[test]
    fn the_text_form_round_trips_and_drops_past_ids() {
        let mut s = SeenIds::with_capacity(2);
        s.remember(&id("d-1"), 5_000, 0);
        s.remember(&id("d-2"), 3_000, 0);
        s.remember(&id("d-3"), 7_000, 0);
        s.lost_memory(1_234);
        let text = s.to_text();
        assert!(text.starts_with("# alarmnet-agent"), "{text}");
        assert_eq!(SeenIds::from_text(&text, 2, 0), Ok(s.clone()));
        let later = SeenIds::from_text(&text, 2, 5_000).expect("valid");
        assert!(!later.contains(&id("d-1"), 5_000) && later.contains(&id("d-3"), 5_000));
        assert!(later.may_have_forgotten(0, 3_000), "the floors survive");
        assert_eq!(later.not_before(), 1_234);
    }

    #[test]
    fn damaged_text_is_refused_with_the_line() {
        let good = "v 1\nforgotten_until 0\nnot_before 0\n100 d-1\n";
        assert!(SeenIds::from_text(good, 10, 0).is_ok());
        for (text, line) in [
            ("", 0),
            ("# only a comment\n", 0),
            ("v 2\n", 1),
            ("v 1\nforgotten_until x\n", 2),
            ("v 1\n100 bad/id\n", 2),
            ("v 1\n100\n", 2),
            ("v 1\n1e3 d-1\n", 2),
        ] {
            let err = SeenIds::from_text(text, 10, 0).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
