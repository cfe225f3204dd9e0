//! The simulator engine.
