//! baton-config (skeleton).
