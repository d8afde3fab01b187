//! Membership: which storage servers exist, how full and busy they are, and
//! whether they are alive — judged only from heartbeats, with time passed in
//! so the rules are testable without a clock.

use dupla::placement::Candidate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A storage server's identity and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// Stable id from the server's data directory.
    pub id: String,
    /// Current host:port.
    pub addr: String,
}

/// What a heartbeat reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Bytes the server may use.
    pub capacity: u64,
    /// Bytes it uses.
    pub used: u64,
    /// Transfers in progress.
    pub active: u32,
    /// Peak resident memory, bytes.
    pub peak_rss: u64,
    /// Base URL of its HTTP API; empty if it has none.
    pub http: String,
}

/// What proves a heartbeat comes from the server it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof<'a> {
    /// The cluster runs with `--insecure`: nothing can be proven, the
    /// cluster secret is all there is.
    Unavailable,
    /// TLS: the common name of the caller's certificate, `None` if it
    /// presented none.
    Certificate(Option<&'a str>),
}

/// Liveness as judged from heartbeat silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Heartbeating on time: takes new placements.
    Up,
    /// Late: no new placements, reads prefer other holders.
    Suspect,
    /// Silent past the grace period (or not heard from since the manager started).
    Down,
}

impl From<Liveness> for dupla::v1::ServerState {
    /// The wire enum of `ClusterStatus`.
    fn from(liveness: Liveness) -> Self {
        match liveness {
            Liveness::Up => dupla::v1::ServerState::Up,
            Liveness::Suspect => dupla::v1::ServerState::Suspect,
            Liveness::Down => dupla::v1::ServerState::Down,
        }
    }
}

/// One known server.
#[derive(Clone, Debug)]
pub struct Member {
    /// Identity and address.
    pub node: NodeRef,
    /// Latest report.
    pub report: Report,
    /// When the last heartbeat arrived; `None` if not since this manager started.
    pub last_seen: Option<Instant>,
    /// When its current run of heartbeats began (its first heartbeat after
    /// being unknown or down): the uptime `dupla status` shows.
    pub up_since: Option<Instant>,
}

/// Every known server, by id.
#[derive(Debug)]
pub struct Membership {
    members: BTreeMap<String, Member>,
    /// Servers being drained before they retire: no new placements, no new
    /// sessions, still readable (their files are copied from them).
    draining: std::collections::BTreeSet<String>,
    suspect_after: Duration,
    down_after: Duration,
}

impl Membership {
    /// Empty membership with the given silence thresholds.
    pub fn new(suspect_after: Duration, down_after: Duration) -> Self {
        Membership {
            members: BTreeMap::new(),
            draining: Default::default(),
            suspect_after,
            down_after,
        }
    }

    /// Remember a server from a previous run (down until it heartbeats).
    pub fn restore(&mut self, node: NodeRef) {
        self.members.entry(node.id.clone()).or_insert(Member {
            node,
            report: Report::default(),
            last_seen: None,
            up_since: None,
        });
    }

    /// Record a heartbeat. Returns true when the server is new or changed
    /// address (so the caller persists it). Refused, with the reason, when
    /// `proof` shows the caller is not that server: a certificate naming
    /// another server, or an address change without the server's own
    /// certificate (otherwise anyone holding the cluster secret could
    /// redirect a known server's traffic to themselves).
    pub fn heartbeat(
        &mut self,
        node: NodeRef,
        report: Report,
        now: Instant,
        proof: Proof<'_>,
    ) -> Result<bool, String> {
        if let Proof::Certificate(Some(name)) = proof {
            if name != node.id {
                return Err(format!(
                    "this connection's certificate is server {name}'s, not {}'s",
                    node.id
                ));
            }
        }
        let down_after = self.down_after;
        match self.members.get_mut(&node.id) {
            Some(member) => {
                let changed = member.node.addr != node.addr;
                if changed && proof == Proof::Certificate(None) {
                    return Err(format!(
                        "server {} is known at {}: moving it to {} needs its own certificate (mTLS), and this call presented none",
                        node.id, member.node.addr, node.addr
                    ));
                }
                let was_down = member
                    .last_seen
                    .is_none_or(|seen| now.saturating_duration_since(seen) >= down_after);
                if was_down {
                    member.up_since = Some(now);
                }
                member.node = node;
                member.report = report;
                member.last_seen = Some(now);
                Ok(changed)
            }
            None => {
                self.members.insert(
                    node.id.clone(),
                    Member {
                        node,
                        report,
                        last_seen: Some(now),
                        up_since: Some(now),
                    },
                );
                Ok(true)
            }
        }
    }

    /// Liveness of a member at `now`.
    pub fn liveness(&self, member: &Member, now: Instant) -> Liveness {
        match member.last_seen {
            None => Liveness::Down,
            Some(seen) => {
                let silent = now.saturating_duration_since(seen);
                if silent >= self.down_after {
                    Liveness::Down
                } else if silent >= self.suspect_after {
                    Liveness::Suspect
                } else {
                    Liveness::Up
                }
            }
        }
    }

    /// Whether server `id` is known to have died: heard from since this
    /// manager started and silent past the grace period since, or no longer
    /// a member. One not heard from yet since a restart is not counted: it
    /// may be alive and about to heartbeat.
    pub fn has_died(&self, id: &str, now: Instant) -> bool {
        match self.members.get(id) {
            None => true,
            Some(member) => {
                member.last_seen.is_some() && self.liveness(member, now) == Liveness::Down
            }
        }
    }

    /// Every member, ordered by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A member by id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is being drained: it takes no new data nor sessions.
    pub fn is_draining(&self, id: &str) -> bool {
        self.draining.contains(id)
    }

    /// Start (true) or stop (false) draining `id`.
    pub fn set_draining(&mut self, id: &str, draining: bool) {
        if draining {
            self.draining.insert(id.to_string());
        } else {
            self.draining.remove(id);
        }
    }

    /// Forget a retired server: it is no longer a member at all.
    pub fn remove(&mut self, id: &str) -> Option<Member> {
        self.draining.remove(id);
        self.members.remove(id)
    }

    /// Servers that may take new data and sessions now: up, and not being
    /// drained.
    pub fn serving(&self, now: Instant) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(move |m| self.liveness(m, now) == Liveness::Up && !self.is_draining(&m.node.id))
    }

    /// Addresses of the servers a user's chat may open on, best first: the
    /// assigned server, then the other serving ones by fewest transfers,
    /// then late (suspect) ones. A late heartbeat under load says little
    /// about whether a server answers; the connection decides, and only
    /// when none does is the manager's own chat used (which would put the
    /// user in rooms no one on a server is in).
    pub fn chat_servers(&self, now: Instant, assigned: Option<&str>) -> Vec<String> {
        let mut live: Vec<_> = self
            .members
            .values()
            .filter(|m| !self.is_draining(&m.node.id))
            .map(|m| (m, self.liveness(m, now)))
            .filter(|(_, liveness)| *liveness != Liveness::Down)
            .collect();
        live.sort_by_key(|(m, liveness)| {
            (
                Some(m.node.id.as_str()) != assigned,
                *liveness != Liveness::Up,
                m.report.active,
            )
        });
        live.into_iter().map(|(m, _)| m.node.addr.clone()).collect()
    }

    /// The [`serving`](Self::serving) servers as placement candidates.
    pub fn candidates(&self, now: Instant) -> Vec<Candidate> {
        self.serving(now)
            .map(|m| Candidate {
                id: m.node.id.clone(),
                free: m.report.capacity.saturating_sub(m.report.used),
                active: m.report.active,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeRef {
        NodeRef {
            id: id.into(),
            addr: format!("{id}:1"),
        }
    }

    #[test]
    fn silence_turns_up_into_suspect_then_down() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(m
            .heartbeat(node("a"), Report::default(), t0, Proof::Unavailable)
            .unwrap());
        let a = m.get("a").unwrap().clone();
        assert_eq!(m.liveness(&a, t0 + Duration::from_secs(2)), Liveness::Up);
        assert_eq!(
            m.liveness(&a, t0 + Duration::from_secs(3)),
            Liveness::Suspect
        );
        assert_eq!(m.liveness(&a, t0 + Duration::from_secs(30)), Liveness::Down);
        assert!(!m
            .heartbeat(
                node("a"),
                Report::default(),
                t0 + Duration::from_secs(31),
                Proof::Unavailable
            )
            .unwrap());
        let a = m.get("a").unwrap().clone();
        assert_eq!(m.liveness(&a, t0 + Duration::from_secs(31)), Liveness::Up);
    }

    #[test]
    fn only_a_server_heard_from_and_silent_since_has_died() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let t0 = Instant::now();
        // Known from the catalog after a restart, not heard from yet.
        m.restore(node("quiet"));
        m.heartbeat(node("a"), Report::default(), t0, Proof::Unavailable)
            .unwrap();
        let later = t0 + Duration::from_secs(31);
        assert!(!m.has_died("quiet", later), "may be about to heartbeat");
        assert!(!m.has_died("a", t0 + Duration::from_secs(29)));
        assert!(m.has_died("a", later));
        assert!(m.has_died("never-a-member", t0));
    }

    #[test]
    fn chat_opens_on_the_assigned_server_even_when_it_is_late() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let t0 = Instant::now();
        for (id, at) in [("a", 0), ("b", 5), ("c", 5), ("d", 5)] {
            m.heartbeat(
                node(id),
                Report {
                    active: if id == "b" { 2 } else { 0 },
                    ..Default::default()
                },
                t0 + Duration::from_secs(at),
                Proof::Unavailable,
            )
            .unwrap();
        }
        m.set_draining("d", true);
        m.restore(node("e"));
        let now = t0 + Duration::from_secs(6);
        // "a" is late (suspect) but assigned: tried first; "d" drains and
        // "e" was never heard from: not tried.
        assert_eq!(m.chat_servers(now, Some("a")), ["a:1", "c:1", "b:1"]);
        // Not assigned: the serving servers first, the late one last.
        assert_eq!(m.chat_servers(now, Some("b")), ["b:1", "c:1", "a:1"]);
        assert_eq!(m.chat_servers(now, None), ["c:1", "b:1", "a:1"]);
        // Silent past the grace period: not tried.
        assert_eq!(
            m.chat_servers(t0 + Duration::from_secs(31), Some("a")),
            ["c:1", "b:1"]
        );
    }

    #[test]
    fn restored_members_are_down_until_heard_and_not_candidates() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        m.restore(node("a"));
        let now = Instant::now();
        assert_eq!(m.liveness(m.get("a").unwrap(), now), Liveness::Down);
        assert!(m.candidates(now).is_empty());
        m.heartbeat(
            node("a"),
            Report {
                capacity: 10,
                used: 4,
                ..Default::default()
            },
            now,
            Proof::Unavailable,
        )
        .unwrap();
        assert_eq!(m.candidates(now)[0].free, 6);
    }

    #[test]
    fn uptime_restarts_after_down_and_draining_servers_take_nothing() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let t0 = Instant::now();
        let beat = |m: &mut Membership, at| {
            m.heartbeat(node("a"), Report::default(), at, Proof::Unavailable)
                .unwrap();
        };
        beat(&mut m, t0);
        beat(&mut m, t0 + Duration::from_secs(2));
        assert_eq!(m.get("a").unwrap().up_since, Some(t0), "still the same run");
        let back = t0 + Duration::from_secs(40);
        beat(&mut m, back);
        assert_eq!(
            m.get("a").unwrap().up_since,
            Some(back),
            "down, then up again"
        );
        m.set_draining("a", true);
        assert!(m.is_draining("a"));
        assert!(
            m.candidates(back).is_empty(),
            "a draining server takes no placement"
        );
        m.set_draining("a", false);
        assert_eq!(m.candidates(back).len(), 1);
        m.set_draining("a", true);
        assert!(m.remove("a").is_some());
        assert!(!m.is_draining("a") && m.get("a").is_none());
    }

    #[test]
    fn address_change_is_reported() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let now = Instant::now();
        m.heartbeat(node("a"), Report::default(), now, Proof::Unavailable)
            .unwrap();
        let moved = NodeRef {
            id: "a".into(),
            addr: "elsewhere:2".into(),
        };
        assert!(m
            .heartbeat(moved, Report::default(), now, Proof::Certificate(Some("a")))
            .unwrap());
        assert_eq!(m.get("a").unwrap().node.addr, "elsewhere:2");
    }

    #[test]
    fn an_address_change_needs_the_servers_own_certificate() {
        let mut m = Membership::new(Duration::from_secs(3), Duration::from_secs(30));
        let now = Instant::now();
        m.heartbeat(
            node("a"),
            Report::default(),
            now,
            Proof::Certificate(Some("a")),
        )
        .unwrap();
        let hijack = NodeRef {
            id: "a".into(),
            addr: "attacker:1".into(),
        };
        let err = m
            .heartbeat(
                hijack.clone(),
                Report::default(),
                now,
                Proof::Certificate(None),
            )
            .unwrap_err();
        assert!(err.contains("needs its own certificate"), "{err}");
        let err = m
            .heartbeat(
                hijack,
                Report::default(),
                now,
                Proof::Certificate(Some("b")),
            )
            .unwrap_err();
        assert!(err.contains("server b's"), "{err}");
        assert_eq!(m.get("a").unwrap().node.addr, "a:1");
        // Same address without a certificate: a plain beat, accepted.
        assert!(!m
            .heartbeat(node("a"), Report::default(), now, Proof::Certificate(None))
            .unwrap());
    }
}
