//! baton-ingress (skeleton).
