//! Chat rooms: the rooms' core (`rooms`), the hub that carries out its
//! effects on channels, and the `dupla.v1.Rooms` service.

pub mod room_hub;
pub mod room_service;
pub mod rooms;
