//! Serde types of this dialect's wire format.
