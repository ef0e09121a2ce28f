//! operator (skeleton).
