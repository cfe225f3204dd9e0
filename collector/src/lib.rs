//! alarmnet collector.
