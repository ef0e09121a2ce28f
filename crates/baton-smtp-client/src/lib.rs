//! baton-smtp-client (skeleton).
