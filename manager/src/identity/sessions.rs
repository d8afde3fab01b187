//! Session assignment: which storage server a user who logs in is sent to.
//!
//! The rule: among the live (`up`) servers, the least loaded one — fewest
//! active transfers, then fewest sessions — that has fewer than
//! `max_sessions` sessions; when every one is full, the least loaded one
//! anyway (login never fails for lack of room; the reply says the cluster
//! is over capacity). [`assign`] is the pure rule; [`loads`] reads the
//! manager's membership and the session counts for it.

use crate::cluster::membership::{Liveness, NodeRef};
use crate::state::State;
use std::collections::HashMap;
use std::time::Instant;

/// What assignment knows of one live server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLoad {
    /// Identity and address.
    pub node: NodeRef,
    /// Transfers in progress, from its last heartbeat.
    pub active: u32,
    /// Live sessions assigned to it.
    pub sessions: usize,
}

/// The outcome of [`assign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The chosen server.
    pub node: NodeRef,
    /// Every server was full: this one takes more than `max_sessions`.
    pub over_capacity: bool,
}

/// Choose a server for one more session, or `None` when no server is live.
pub fn assign(servers: &[ServerLoad], max_sessions: usize) -> Option<Assignment> {
    // Ties fall to the server id, so the choice is deterministic.
    let least_loaded = |a: &&ServerLoad, b: &&ServerLoad| {
        (a.active, a.sessions, &a.node.id).cmp(&(b.active, b.sessions, &b.node.id))
    };
    if let Some(best) = servers
        .iter()
        .filter(|s| s.sessions < max_sessions)
        .min_by(least_loaded)
    {
        return Some(Assignment {
            node: best.node.clone(),
            over_capacity: false,
        });
    }
    servers.iter().min_by(least_loaded).map(|best| Assignment {
        node: best.node.clone(),
        over_capacity: true,
    })
}

/// The `up` servers (not being drained) from `state`'s membership at `now`, with their session
/// counts from `sessions` (server id → live sessions).
pub fn loads(state: &State, sessions: &HashMap<String, usize>, now: Instant) -> Vec<ServerLoad> {
    let membership = state.lock_membership();
    membership
        .members()
        .filter(|m| membership.liveness(m, now) == Liveness::Up)
        .filter(|m| !membership.is_draining(&m.node.id))
        .map(|m| ServerLoad {
            node: m.node.clone(),
            active: m.report.active,
            sessions: sessions.get(&m.node.id).copied().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: &str, active: u32, sessions: usize) -> ServerLoad {
        ServerLoad {
            node: NodeRef {
                id: id.into(),
                addr: format!("{id}:1"),
            },
            active,
            sessions,
        }
    }

    fn chosen(servers: &[ServerLoad], max: usize) -> (String, bool) {
        let a = assign(servers, max).unwrap();
        (a.node.id, a.over_capacity)
    }

    #[test]
    fn fewest_transfers_first_then_fewest_sessions() {
        let servers = [load("a", 3, 0), load("b", 1, 5), load("c", 1, 2)];
        assert_eq!(chosen(&servers, 10), ("c".into(), false));
    }

    #[test]
    fn full_servers_are_skipped() {
        let servers = [load("a", 0, 10), load("b", 7, 9)];
        assert_eq!(chosen(&servers, 10), ("b".into(), false));
    }

    #[test]
    fn when_all_are_full_the_least_loaded_takes_it_anyway() {
        let servers = [load("a", 2, 10), load("b", 1, 12)];
        assert_eq!(chosen(&servers, 10), ("b".into(), true));
    }

    #[test]
    fn no_live_server_no_assignment() {
        assert_eq!(assign(&[], 10), None);
    }

    #[test]
    fn idle_servers_fill_evenly() {
        let mut servers = vec![load("a", 0, 0), load("b", 0, 0), load("c", 0, 0)];
        for _ in 0..30 {
            let (id, over) = chosen(&servers, 10);
            assert!(!over);
            servers
                .iter_mut()
                .find(|s| s.node.id == id)
                .unwrap()
                .sessions += 1;
        }
        assert!(servers.iter().all(|s| s.sessions == 10));
        assert!(chosen(&servers, 10).1, "the 31st is over capacity");
    }
}
