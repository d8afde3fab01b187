//! What the chat rules share between the manager and the storage servers:
//! how a typed line parses ([`command`]), the per-user flood control
//! ([`rate`]) and the sessions' limits and own events ([`session`]). The manager runs the room rules; a storage server serving
//! `dupla.v1.Rooms/Chat` for its own users parses each line to tell a room
//! message (which it publishes itself) from a `#` command (which it asks
//! the manager to run), and throttles both by the same rule as the
//! manager's own Rooms service.

pub mod command;
pub mod rate;
pub mod session;
