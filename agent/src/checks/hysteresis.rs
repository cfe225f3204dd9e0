//! Hysteresis: when a check's run results turn into a fault being raised or cleared.
//! Pure logic, no time: it sees one run at a time.

/// What one run changed about the check's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Raise,
    Clear,
}

/// Counts consecutive failing and passing runs. A fault is raised after `raise_after`
/// failing runs in a row and cleared after `clear_after` passing runs in a row; a run on the
/// other side resets the streak, so one noisy reading neither raises nor clears.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    raise_after: u32,
    clear_after: u32,
    /// Consecutive runs on the side opposite to the fault's current state.
    streak: u32,
    raised: bool,
}

impl Hysteresis {
    /// Both counts are at least 1 (validation makes sure; 0 is treated as 1).
    pub fn new(raise_after: u32, clear_after: u32) -> Self {
        Self {
            raise_after: raise_after.max(1),
            clear_after: clear_after.max(1),
            streak: 0,
            raised: false,
        }
    }

    /// Whether the fault is raised now.
    pub fn is_raised(&self) -> bool {
        self.raised
    }

    /// Feeds the result of one run.
    pub fn observe(&mut self, failing: bool) -> Option<Transition> {
        if failing != self.raised {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        let needed = if self.raised {
            self.clear_after
        } else {
            self.raise_after
        };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.raised = !self.raised;
        Some(if self.raised {
            Transition::Raise
        } else {
            Transition::Clear
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sequence written as `F` (failing) and `.` (passing) and returns the
    /// transitions as a string of the same length: `R` raise, `C` clear, `-` nothing.
    fn run(raise_after: u32, clear_after: u32, seq: &str) -> String {
        let mut h = Hysteresis::new(raise_after, clear_after);
        seq.chars()
            .map(|c| match h.observe(c == 'F') {
                Some(Transition::Raise) => 'R',
                Some(Transition::Clear) => 'C',
                None => '-',
            })
            .collect()
    }

    #[test]
    fn raise_after_one_raises_on_the_first_failure() {
        assert_eq!(run(1, 1, "F.F."), "RCRC");
        assert_eq!(run(1, 2, "F..F"), "R-CR");
        assert_eq!(run(1, 2, "F.F."), "R---");
    }

    #[test]
    fn a_fault_is_raised_once_however_long_it_lasts() {
        assert_eq!(run(2, 2, "FFFFFFFF"), "-R------");
    }

    #[test]
    fn one_noisy_reading_neither_raises_nor_clears() {
        assert_eq!(run(2, 2, "F.F.F.F."), "--------");
        assert_eq!(run(3, 2, "FF.FF.FFF"), "--------R");
        assert_eq!(run(2, 3, "FF..F...F"), "-R-----C-");
    }

    #[test]
    fn clears_after_the_configured_passing_streak() {
        assert_eq!(run(2, 3, "FF...."), "-R--C-");
        assert_eq!(run(2, 1, "FF.FF."), "-RC-RC");
    }

    #[test]
    fn zero_counts_act_as_one() {
        assert_eq!(run(0, 0, "F."), "RC");
    }

    #[test]
    fn every_short_sequence_alternates_raise_and_clear() {
        // Exhaustive over all 2^10 sequences for a few settings: transitions alternate,
        // start with a raise, and a raise happens exactly when the last `raise_after` runs
        // failed while the fault was down.
        for (ra, ca) in [(1, 1), (1, 3), (2, 2), (3, 1), (4, 4)] {
            for bits in 0u32..1024 {
                let seq: String = (0..10)
                    .map(|i| if bits >> i & 1 == 1 { 'F' } else { '.' })
                    .collect();
                let out = run(ra, ca, &seq);
                let events: String = out.chars().filter(|c| *c != '-').collect();
                let expected_alternation: String =
                    "RC".chars().cycle().take(events.len()).collect();
                assert_eq!(events, expected_alternation, "{ra}/{ca} {seq} -> {out}");
                for (i, c) in out.char_indices() {
                    let need = if c == 'R' { ra } else { ca } as usize;
                    if c != '-' {
                        let want = if c == 'R' { 'F' } else { '.' };
                        assert!(i + 1 >= need, "{seq} {out}");
                        assert!(
                            seq[i + 1 - need..=i].chars().all(|s| s == want),
                            "{ra}/{ca} {seq} -> {out} at {i}"
                        );
                    }
                }
            }
        }
    }
}
