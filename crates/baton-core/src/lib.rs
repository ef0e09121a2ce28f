//! baton-core (skeleton).
