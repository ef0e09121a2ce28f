//! baton-queue (skeleton).
