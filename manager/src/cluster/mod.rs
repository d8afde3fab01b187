//! The cluster: which storage servers exist and how they are, and the
//! elastic servers the manager launches and retires.

pub mod elastic;
pub mod launcher;
pub mod membership;
