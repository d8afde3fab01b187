//! The social network's shared state: the graph (invitations, friends,
//! posts, groups), who is online, the `dupla.v1.SocialGraph` service the
//! storage servers call, and the embedded MQTT broker.

pub mod embedded_broker;
pub mod graph;
pub mod presence;
pub mod service;
