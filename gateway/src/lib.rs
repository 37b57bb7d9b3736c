//! The gateway node.
pub mod balance;
pub mod router;
