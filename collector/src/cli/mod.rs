//! Operator commands (filled below).
