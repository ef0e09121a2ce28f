//! baton-smtp (skeleton).
