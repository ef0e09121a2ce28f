//! baton-telemetry (skeleton).
