//! Measures the placement rule, for docs/placement.md:
//! `cargo run --release --example placement_report`.
//!
//! Prints, over 10,000 names: each server's share of primaries and of all
//! copies against its weight share (servers of unequal capacity), the
//! fraction of files that move when one of five servers is removed or a
//! sixth is added, and the effect of the bounded-load rule.

use dupla::placement::{choose, Candidate, DEFAULT_LOAD_EPSILON, LOAD_FLOOR};

const NAMES: usize = 10_000;
const TIB: u64 = 1 << 40;

fn servers(weights: &[u64]) -> Vec<Candidate> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Candidate {
            id: format!("srv-{i}"),
            free: w * TIB,
            active: 0,
        })
        .collect()
}

fn holders(cands: &[Candidate], name: &str) -> Vec<String> {
    choose(name, 1, cands, DEFAULT_LOAD_EPSILON)[..2]
        .iter()
        .map(|&i| cands[i].id.clone())
        .collect()
}

fn names() -> impl Iterator<Item = String> {
    (0..NAMES).map(|i| format!("user-{}/file-{i}.dat", i % 37))
}

fn main() {
    let weights = [1, 2, 3, 4, 5];
    let five = servers(&weights);
    let total: u64 = weights.iter().sum();
    let mut primary = vec![0usize; five.len()];
    let mut copies = vec![0usize; five.len()];
    for name in names() {
        let order = choose(&name, 1, &five, DEFAULT_LOAD_EPSILON);
        primary[order[0]] += 1;
        copies[order[0]] += 1;
        copies[order[1]] += 1;
    }
    println!("## Balance: {NAMES} names, five servers weighted 1:2:3:4:5 (TiB free)\n");
    println!(
        "| server | weight share | primaries | primary share | error | all copies | copy share |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, w) in weights.iter().enumerate() {
        let want = *w as f64 / total as f64;
        let got = primary[i] as f64 / NAMES as f64;
        println!(
            "| srv-{i} | {:.1}% | {} | {:.1}% | {:+.1}% | {} | {:.1}% |",
            want * 100.0,
            primary[i],
            got * 100.0,
            (got - want) / want * 100.0,
            copies[i],
            copies[i] as f64 / (2 * NAMES) as f64 * 100.0
        );
    }

    let four: Vec<Candidate> = five.iter().filter(|c| c.id != "srv-2").cloned().collect();
    let (mut held_by_removed, mut moved_other) = (0, 0);
    for name in names() {
        let before = holders(&five, &name);
        let after = holders(&four, &name);
        if before.iter().any(|h| h == "srv-2") {
            held_by_removed += 1;
        } else if before != after {
            moved_other += 1;
        }
    }
    println!("\n## Movement when srv-2 (weight 3) is removed\n");
    println!(
        "- files with a copy on srv-2: {held_by_removed} ({:.1}%) — each re-places only that copy",
        held_by_removed as f64 / NAMES as f64 * 100.0
    );
    println!("- files without a copy on srv-2 whose holders changed: {moved_other}");

    let mut six = five.clone();
    six.push(Candidate {
        id: "srv-new".into(),
        free: 3 * TIB,
        active: 0,
    });
    let (mut to_new, mut between_old) = (0, 0);
    for name in names() {
        let a = five[choose(&name, 1, &five, DEFAULT_LOAD_EPSILON)[0]]
            .id
            .clone();
        let b = six[choose(&name, 1, &six, DEFAULT_LOAD_EPSILON)[0]]
            .id
            .clone();
        if a != b {
            if b == "srv-new" {
                to_new += 1;
            } else {
                between_old += 1;
            }
        }
    }
    println!("\n## Adding a sixth server of weight 3 (total 15 -> 18)\n");
    println!(
        "- primaries that move to it: {to_new} ({:.1}%; theory w/(W+w) = {:.1}%)",
        to_new as f64 / NAMES as f64 * 100.0,
        3.0 / 18.0 * 100.0
    );
    println!("- primaries that move between old servers: {between_old}");

    let calm = servers(&[1, 1, 1, 1]);
    let mut busy = calm.clone();
    busy[0].active = 12;
    let (mut would, mut skipped, mut others_changed) = (0, 0, 0);
    for name in names() {
        let before = holders(&calm, &name);
        let after = holders(&busy, &name);
        if before[0] == "srv-0" {
            would += 1;
            if after[0] != "srv-0" {
                skipped += 1;
            }
        } else if before[0] != after[0] {
            others_changed += 1;
        }
    }
    println!(
        "\n## Bounded load (epsilon = {DEFAULT_LOAD_EPSILON}, floor = {LOAD_FLOOR} transfers)\n"
    );
    println!("- four equal servers, srv-0 running 12 transfers while the others run none:");
    println!("  of the {would} names whose primary is srv-0, {skipped} get another primary while it is busy;");
    println!("  primaries of other names that change: {others_changed} (replicas formerly on srv-0 move to the next server in order).");
}
