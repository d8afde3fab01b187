//! Placement: which servers hold a new file.
//!
//! **Weighted rendezvous hashing** (HRW, the "straw2" rule of Ceph's CRUSH).
//! Every candidate server draws a score from a hash of (file name, server id)
//! scaled by its weight, `ln(u) / weight` with `u` uniform in (0, 1]; servers
//! are ranked by score, the best is the primary, the next the replica, and
//! the rest are fallbacks in order. Properties that follow:
//!
//! * a server's share of first choices is its weight over the total weight;
//! * adding a server of weight w to a total W takes about w/(W+w) of new
//!   placements, and nothing moves between the others; removing a server only
//!   re-places what it held;
//! * no table to keep in sync: any node with the same inputs gets the same order.
//!
//! The weight is the server's free capacity, so fuller disks receive less.
//! Live load is applied as a **bounded-load rule**: a server whose active
//! transfers exceed (1 + ε) × its fair share of the cluster's transfers is
//! moved behind the others for this one decision. Stored data never moves
//! because load changed: placements are recorded in the catalog and only
//! used at write time.
//!
//! Pure functions: no I/O, no clock, no randomness beyond the hash.

/// A server that may receive a new file, as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Stable server id (the hash input, so an address change moves nothing).
    pub id: String,
    /// Free bytes: the weight.
    pub free: u64,
    /// Uploads and downloads in progress: the load.
    pub active: u32,
}

/// How much over its fair share of transfers a server may run before new
/// placements skip it: 25% keeps the hash order almost always, and still
/// steers around a server that is clearly busier than the rest.
pub const DEFAULT_LOAD_EPSILON: f64 = 0.25;

/// A server running fewer transfers than this is never skipped for load:
/// with a handful of transfers in the cluster, one is noise, not overload.
pub const LOAD_FLOOR: u32 = 2;

/// Score of one server for one key: higher wins. `ln(u)` is negative, so a
/// larger weight pulls the score towards zero, winning proportionally more.
pub fn score(key: &str, id: &str, weight: f64) -> f64 {
    if weight <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let bits = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
    // 53 random bits -> u in (0, 1], never 0 so ln(u) is finite.
    let u = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
    u.ln() / weight
}

/// Candidates ranked for `key` by weighted rendezvous score, best first.
/// Returns indices into `candidates`; servers of zero weight come last.
pub fn rank(key: &str, candidates: &[Candidate]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (score(key, &c.id, c.free as f64), i))
        .collect();
    // Ties (equal scores) are broken by id so the order never depends on
    // the order candidates were listed in.
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| candidates[a.1].id.cmp(&candidates[b.1].id))
    });
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The placement order for a new file of `size` bytes named `key`: servers
/// without room for it are left out; the rest are in rendezvous order, with
/// servers over their bounded load moved (in order) behind the others.
/// The first two are the primary and the replica.
pub fn choose(key: &str, size: u64, candidates: &[Candidate], epsilon: f64) -> Vec<usize> {
    let ranked: Vec<usize> = rank(key, candidates)
        .into_iter()
        .filter(|&i| candidates[i].free >= size && candidates[i].free > 0)
        .collect();
    let total_weight: f64 = ranked.iter().map(|&i| candidates[i].free as f64).sum();
    // Count this placement's two new transfers in the total so an idle
    // cluster never marks anyone overloaded.
    let total_active: f64 = ranked
        .iter()
        .map(|&i| candidates[i].active as f64)
        .sum::<f64>()
        + 2.0;
    let overloaded = |i: usize| {
        let fair = total_active * candidates[i].free as f64 / total_weight;
        let cap = ((1.0 + epsilon) * fair).ceil().max(1.0);
        candidates[i].active >= LOAD_FLOOR && (candidates[i].active as f64 + 1.0) > cap
    };
    let (mut order, behind): (Vec<usize>, Vec<usize>) =
        ranked.into_iter().partition(|&i| !overloaded(i));
    order.extend(behind);
    order
}

/// `order` (from [`choose`]) with the holders of the file's previous version
/// moved to the front, in their order, when every one of them is in it. A
/// new version goes where the old one is: the chunks the two share are
/// already there and travel by reference, where a placement that moved
/// (free space shifts the weights a little with every upload) would make
/// the client send the whole file again. A holder that left the order (down,
/// draining, full) leaves it as it is.
pub fn prefer_holders(
    mut order: Vec<usize>,
    candidates: &[Candidate],
    holders: &[String],
) -> Vec<usize> {
    let positions: Option<Vec<usize>> = holders
        .iter()
        .take(2)
        .map(|h| order.iter().position(|&i| candidates[i].id == *h))
        .collect();
    let Some(positions) = positions.filter(|p| !p.is_empty()) else {
        return order;
    };
    let front: Vec<usize> = positions.iter().map(|&p| order[p]).collect();
    order.retain(|i| !front.contains(i));
    front.into_iter().chain(order).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TIB: u64 = 1 << 40;

    fn servers(weights: &[u64]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                id: format!("server-{i}"),
                free: w * TIB,
                active: 0,
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user/file-{i}.bin")).collect()
    }

    #[test]
    fn a_new_version_stays_with_the_previous_holders_while_they_can_take_it() {
        let cands = servers(&[1, 2, 3, 4]);
        let order = choose("user/big.bin", 1, &cands, DEFAULT_LOAD_EPSILON);
        let (a, b) = (order[2], order[3]);
        let holders = vec![cands[a].id.clone(), cands[b].id.clone()];
        let sticky = prefer_holders(order.clone(), &cands, &holders);
        assert_eq!(&sticky[..2], &[a, b]);
        assert_eq!(sticky.len(), order.len());
        assert!(order.iter().all(|i| sticky.contains(i)));
        // A previous holder that is not in the order (down, full): as chosen.
        let gone = vec![cands[a].id.clone(), "server-9".to_string()];
        assert_eq!(prefer_holders(order.clone(), &cands, &gone), order);
        // No previous version: as chosen.
        assert_eq!(prefer_holders(order.clone(), &cands, &[]), order);
        // A degraded previous version (one holder) keeps that one first.
        let one = vec![cands[b].id.clone()];
        assert_eq!(prefer_holders(order.clone(), &cands, &one)[0], b);
    }

    #[test]
    fn first_choice_share_follows_weight_within_ten_percent() {
        let cands = servers(&[1, 2, 3, 4, 5]);
        let total: u64 = 15;
        let mut primaries = vec![0usize; cands.len()];
        for name in names(10_000) {
            primaries[choose(&name, 1, &cands, DEFAULT_LOAD_EPSILON)[0]] += 1;
        }
        for (i, got) in primaries.iter().enumerate() {
            let want = 10_000.0 * (i as f64 + 1.0) / total as f64;
            let err = (*got as f64 - want).abs() / want;
            assert!(
                err < 0.10,
                "server {i}: {got} placements, expected {want:.0} ({err:.3})"
            );
        }
    }

    #[test]
    fn primary_and_replica_are_distinct() {
        let cands = servers(&[1, 1, 1]);
        for name in names(1000) {
            let order = choose(&name, 1, &cands, DEFAULT_LOAD_EPSILON);
            assert_eq!(order.len(), 3);
            assert_ne!(order[0], order[1]);
        }
    }

    #[test]
    fn removing_one_of_five_moves_only_its_files() {
        let five = servers(&[1, 2, 3, 4, 5]);
        let four: Vec<Candidate> = five
            .iter()
            .filter(|c| c.id != "server-2")
            .cloned()
            .collect();
        let holders = |cands: &[Candidate], name: &str| -> Vec<String> {
            let order = choose(name, 1, cands, DEFAULT_LOAD_EPSILON);
            order[..2].iter().map(|&i| cands[i].id.clone()).collect()
        };
        let mut moved = 0;
        for name in names(10_000) {
            let before = holders(&five, &name);
            let after = holders(&four, &name);
            if before.contains(&"server-2".to_string()) {
                // The surviving copy stays put; only the lost one moves.
                let kept: Vec<&String> = before.iter().filter(|h| *h != "server-2").collect();
                assert!(after.contains(kept[0]), "{name}: surviving holder moved");
                moved += 1;
            } else {
                assert_eq!(
                    before, after,
                    "{name} moved although server-2 did not hold it"
                );
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn adding_a_server_takes_its_weight_share() {
        let four = servers(&[1, 1, 1, 1]);
        let mut five = four.clone();
        five.push(Candidate {
            id: "new".into(),
            free: TIB,
            active: 0,
        });
        let mut moved = 0usize;
        for name in names(10_000) {
            let a = four[choose(&name, 1, &four, 0.25)[0]].id.clone();
            let b = five[choose(&name, 1, &five, 0.25)[0]].id.clone();
            if a != b {
                assert_eq!(b, "new", "a primary moved between old servers");
                moved += 1;
            }
        }
        let share = moved as f64 / 10_000.0;
        assert!((share - 0.2).abs() < 0.02, "moved share {share}");
    }

    #[test]
    fn servers_without_room_are_left_out() {
        let mut cands = servers(&[1, 1, 1]);
        cands[1].free = 10;
        let order = choose("big", 1000, &cands, 0.25);
        assert_eq!(order.len(), 2);
        assert!(!order.contains(&1));
    }

    #[test]
    fn a_busy_server_is_moved_behind_without_reordering_the_rest() {
        let mut cands = servers(&[1, 1, 1, 1]);
        let name = "some/file";
        let calm = choose(name, 1, &cands, 0.25);
        let busiest = calm[0];
        cands[busiest].active = 20;
        let busy = choose(name, 1, &cands, 0.25);
        assert_eq!(*busy.last().unwrap(), busiest);
        let rest: Vec<usize> = calm.iter().copied().filter(|&i| i != busiest).collect();
        assert_eq!(&busy[..3], &rest[..]);
    }

    #[test]
    fn one_transfer_on_an_idle_cluster_moves_nothing() {
        let mut cands = servers(&[1, 1, 1, 1]);
        let calm = choose("x", 1, &cands, 0.25);
        cands[calm[0]].active = 1;
        assert_eq!(choose("x", 1, &cands, 0.25), calm);
    }

    #[test]
    fn order_does_not_depend_on_listing_order() {
        let cands = servers(&[3, 1, 2]);
        let mut reversed = cands.clone();
        reversed.reverse();
        for name in names(200) {
            let a: Vec<&str> = choose(&name, 1, &cands, 0.25)
                .iter()
                .map(|&i| cands[i].id.as_str())
                .collect();
            let b: Vec<&str> = choose(&name, 1, &reversed, 0.25)
                .iter()
                .map(|&i| reversed[i].id.as_str())
                .collect();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn replica_share_is_reported() {
        // Not an assertion of proportionality (second choices of HRW are
        // close to, not exactly, weight-proportional); prints the table that
        // docs/placement.md quotes. Run with --nocapture to see it.
        let cands = servers(&[1, 2, 3, 4, 5]);
        let mut counts: HashMap<usize, (usize, usize)> = HashMap::new();
        for name in names(10_000) {
            let order = choose(&name, 1, &cands, 0.25);
            counts.entry(order[0]).or_default().0 += 1;
            counts.entry(order[1]).or_default().1 += 1;
        }
        for i in 0..cands.len() {
            let (p, r) = counts[&i];
            println!("weight {}: primary {p}, replica {r}", i + 1);
        }
        assert_eq!(counts.values().map(|c| c.0).sum::<usize>(), 10_000);
    }
}
