//! alarmnet agent.
