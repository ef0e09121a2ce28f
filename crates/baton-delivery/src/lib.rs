//! baton-delivery (skeleton).
