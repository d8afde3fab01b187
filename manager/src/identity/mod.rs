//! Identity: accounts and their tokens, who may do what, throttles, the
//! operator's admin actions, and the enrolment of servers' certificates.

pub mod accounts;
pub mod accounts_service;
pub mod admin;
pub mod auth;
pub mod enrolment;
pub mod gate;
pub mod sessions;
pub mod throttle;
pub mod tokens;
