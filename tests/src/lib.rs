//! system-test harness (skeleton).
