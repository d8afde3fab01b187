//! Chat rooms: the rooms' core (`rooms`), the hub that carries out its
//! effects on channels and the `dupla.v1.Rooms` service (the manager's own
//! chat, kept for compatibility), and `dupla.v1.RoomRelay`, through which
//! the storage servers run the rooms of their users' chats while the lines
//! themselves travel through the broker (`relay`, `relay_effects`).

pub mod relay;
pub mod relay_effects;
pub mod room_hub;
pub mod room_service;
pub mod rooms;
