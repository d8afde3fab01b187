//! Load with a crash in the middle, with the real binaries: a manager and
//! three servers started from copies of `nodes/`, twelve users each backing
//! up three files (1 MB to 100 MB, about 600 MB in all) with their own
//! `dupla` client at the same time, while one storage server is killed with
//! SIGKILL once uploads are under way and restarted a few seconds later.
//! Every backup must succeed (the client resumes through another server by
//! itself), every acknowledged file must restore byte-identical, each user
//! must see exactly their own files, and once the cluster reports nothing
//! under-replicated everything must restore byte-identical again.

use dupla_testkit::procs::{
    self, backup_lines, client, copy_node_dir, start_cluster, wait_for_up, Cluster, NodeProcess,
};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Users backing up at once.
const USERS: usize = 12;

/// File sizes per user, in MB (10^6 bytes); a few bytes are added to each
/// so that no file ends on a chunk boundary. About 600 MB in all, three
/// files near 100 MB.
const SIZES_MB: [[u64; 3]; USERS] = [
    [3, 100, 1],
    [2, 30, 6],
    [12, 1, 20],
    [4, 95, 2],
    [8, 20, 1],
    [1, 15, 40],
    [5, 2, 25],
    [1, 90, 3],
    [10, 7, 2],
    [20, 1, 9],
    [4, 18, 2],
    [1, 6, 30],
];

/// The storage server that is killed (index into `Cluster::servers`).
const VICTIM: usize = 1;

/// Chunks the victim must have stored before it is killed: uploads are
/// well under way, and most of the data is still to come.
const KILL_AFTER_CHUNKS: usize = 48;

/// Longest a client's backup or restore may take before the test gives up.
const CLIENT_DEADLINE: Duration = Duration::from_secs(600);

/// One user: login, client root, files (catalog name, size).
struct User {
    login: String,
    root: PathBuf,
    files: Vec<(String, u64)>,
}

impl User {
    fn source(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// A backup run of one user's client, in the background.
struct Backup {
    child: Child,
    started: Instant,
    finished: Option<Duration>,
}

/// Write `size` pseudo-random bytes (blake3 in XOF mode, keyed by `seed`)
/// to `path`.
fn write_file(path: &Path, size: u64, seed: u64) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"dupla load test");
    hasher.update(&seed.to_le_bytes());
    let mut xof = hasher.finalize_xof();
    let mut out = std::io::BufWriter::new(File::create(path).expect("create a test file"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        out.write_all(&buf[..n]).expect("write a test file");
        left -= n as u64;
    }
    out.flush().expect("flush a test file");
}

/// Whether two files hold the same bytes; a readable reason if not.
fn same_bytes(want: &Path, got: &Path) -> Result<(), String> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    let (a, b) = (
        len(want).map_err(|e| format!("{}: {e}", want.display()))?,
        len(got).map_err(|e| format!("{}: {e}", got.display()))?,
    );
    if a != b {
        return Err(format!("{} bytes restored, {a} backed up", b));
    }
    let mut want = File::open(want).map_err(|e| e.to_string())?;
    let mut got = File::open(got).map_err(|e| e.to_string())?;
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    while offset < a {
        let n = (a - offset).min(x.len() as u64) as usize;
        want.read_exact(&mut x[..n]).map_err(|e| e.to_string())?;
        got.read_exact(&mut y[..n]).map_err(|e| e.to_string())?;
        if x[..n] != y[..n] {
            let at = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q);
            return Err(format!(
                "bytes differ at offset {}",
                offset + at.unwrap_or(0) as u64
            ));
        }
        offset += n as u64;
    }
    Ok(())
}

/// `dupla status --json` through `root`'s client, if the manager answers.
fn status(root: &Path, manager: &str) -> Option<Value> {
    let out = client(root, &["--manager", manager, "--json", "status"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("status is JSON"))
}

/// The state ("up", "suspect", "down") of the server at `addr`.
fn state_of(status: &Value, addr: &str) -> String {
    status["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["addr"] == addr))
        .and_then(|s| s["state"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

/// Poll status (100 ms apart) until `done` holds; returns the wait.
fn wait_for_status(
    root: &Path,
    manager: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(status) = status(root, manager) {
            if done(&status) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}: {status}"
            );
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Durable chunk files of the server running in `dir`.
fn stored_chunks(dir: &Path) -> usize {
    dupla_testkit::stored_chunks(&dir.join("data"))
}

/// Start `user`'s backup of all their files, output to files in their root.
fn spawn_backup(user: &User, manager: &str) -> Backup {
    let mut args = vec!["--manager", manager, "--json", "backup"];
    args.extend(user.files.iter().map(|(name, _)| name.as_str()));
    let child = Command::new(procs::bin_dir().join("dupla"))
        .current_dir(&user.root)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(File::create(user.root.join("backup.out")).unwrap())
        .stderr(File::create(user.root.join("backup.err")).unwrap())
        .spawn()
        .expect("start dupla backup");
    Backup {
        child,
        started: Instant::now(),
        finished: None,
    }
}

/// Restore every file of `user` named in `names` and compare it with its
/// source; returns the failures.
fn restore_and_compare(user: &User, manager: &str, names: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    for name in names {
        let target = format!("restored-{}", name.replace('/', "_"));
        let started = Instant::now();
        let out = client(
            &user.root,
            &[
                "--manager",
                manager,
                "--json",
                "restore",
                name,
                "-o",
                &target,
            ],
        );
        if !out.status.success() {
            failures.push(format!(
                "{}: restore {name} failed: {}",
                user.login,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        if started.elapsed() > CLIENT_DEADLINE {
            failures.push(format!("{}: restore {name} took too long", user.login));
        }
        let restored = user.root.join(&target);
        if let Err(e) = same_bytes(&user.source(name), &restored) {
            failures.push(format!("{}: {name}: {e}", user.login));
        }
        let _ = std::fs::remove_file(restored);
    }
    failures
}

/// Restore every acknowledged file of every user, users in parallel.
fn restore_everything(users: &[User], acked: &[Vec<String>], manager: &str) -> Vec<String> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = users
            .iter()
            .zip(acked)
            .map(|(user, names)| scope.spawn(move || restore_and_compare(user, manager, names)))
            .collect();
        runs.into_iter()
            .flat_map(|run| run.join().expect("a restore thread panicked"))
            .collect()
    })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn twelve_users_back_up_and_restore_while_a_server_is_killed_and_restarted() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster: Cluster = start_cluster(tmp.path());
    let manager = cluster.manager.addr.clone();
    let users: Vec<User> = (0..USERS)
        .map(|u| {
            let login = format!("load-user-{u:02}");
            let root = copy_node_dir("client", &tmp.path().join(&login));
            let files = SIZES_MB[u]
                .iter()
                .enumerate()
                .map(|(j, mb)| {
                    (
                        format!("data/file-{j}.bin"),
                        mb * 1_000_000 + u as u64 * 1000 + j as u64 * 7 + 1,
                    )
                })
                .collect();
            User { login, root, files }
        })
        .collect();
    wait_for_up(&cluster, &users[0].root, 3);
    for user in &users {
        procs::register_and_login(&user.root, &manager, &user.login);
    }
    let setup = t0.elapsed();

    // The files, written in parallel.
    let t = Instant::now();
    std::thread::scope(|scope| {
        for (u, user) in users.iter().enumerate() {
            scope.spawn(move || {
                std::fs::create_dir_all(user.root.join("data")).unwrap();
                for (j, (name, size)) in user.files.iter().enumerate() {
                    write_file(&user.source(name), *size, (u * 10 + j) as u64);
                }
            });
        }
    });
    let total: u64 = users
        .iter()
        .flat_map(|u| u.files.iter().map(|(_, s)| s))
        .sum();
    let generated = t.elapsed();
    eprintln!(
        "setup {:.1} s (cluster, {USERS} accounts); {:.0} MB in {} files written in {:.1} s",
        setup.as_secs_f64(),
        total as f64 / 1e6,
        USERS * 3,
        generated.as_secs_f64()
    );

    // Everyone backs up at once.
    let t_backup = Instant::now();
    let mut backups: Vec<Backup> = users.iter().map(|u| spawn_backup(u, &manager)).collect();

    // Kill a server once uploads are under way (it has stored chunks).
    let victim_dir = cluster.servers[VICTIM].dir.clone();
    let victim_addr = cluster.servers[VICTIM].addr.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored_chunks(&victim_dir) < KILL_AFTER_CHUNKS {
        assert!(
            Instant::now() < deadline,
            "{} never stored {KILL_AFTER_CHUNKS} chunks",
            cluster.servers[VICTIM].name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stored_at_kill: Vec<usize> = cluster
        .servers
        .iter()
        .map(|s| stored_chunks(&s.dir))
        .collect();
    let running_at_kill = backups
        .iter_mut()
        .filter_map(|b| b.child.try_wait().unwrap().is_none().then_some(()))
        .count();
    cluster.servers[VICTIM].kill();
    let killed_at = t_backup.elapsed();
    // It is back once the manager has noticed it is gone (suspect, 3 s).
    let noticed = wait_for_status(
        &users[0].root,
        &manager,
        "the manager to notice the kill",
        Duration::from_secs(30),
        |s| state_of(s, &victim_addr) != "up",
    );
    let killed_log = victim_dir.join("node.log.killed");
    std::fs::rename(victim_dir.join("node.log"), &killed_log).unwrap();
    cluster.servers[VICTIM] = NodeProcess::start(
        &cluster.servers[VICTIM].name.clone(),
        "dupla-server",
        &victim_dir,
        &victim_addr,
        &["--listen", &victim_addr, "--manager", &manager],
    );
    let back_up = wait_for_status(
        &users[0].root,
        &manager,
        "the restarted server to be up",
        Duration::from_secs(30),
        |s| state_of(s, &victim_addr) == "up",
    );
    eprintln!(
        "killed {} at {:.1} s ({running_at_kill} of {USERS} clients running; chunks stored per server {stored_at_kill:?}); the manager saw it {:.1} s later; restarted, up after {:.1} s more",
        cluster.servers[VICTIM].name,
        killed_at.as_secs_f64(),
        noticed.as_secs_f64(),
        back_up.as_secs_f64()
    );

    // Let every client finish.
    loop {
        let mut running = 0;
        for b in backups.iter_mut() {
            if b.finished.is_none() {
                if b.child.try_wait().unwrap().is_some() {
                    b.finished = Some(b.started.elapsed());
                } else {
                    running += 1;
                    if b.started.elapsed() > CLIENT_DEADLINE {
                        let _ = b.child.kill();
                    }
                }
            }
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let backup_wall = t_backup.elapsed();

    // Judge every client: receipts printed, errors printed, retries.
    let mut acked: Vec<Vec<String>> = Vec::new();
    let mut failed = Vec::new();
    let mut retried = 0;
    for (user, b) in users.iter().zip(backups.iter_mut()) {
        let code = b.child.wait().unwrap();
        let stdout = std::fs::read(user.root.join("backup.out")).unwrap();
        let stderr = std::fs::read_to_string(user.root.join("backup.err")).unwrap();
        let (receipts, _summary) = backup_lines(&stdout);
        let mut names = Vec::new();
        for receipt in &receipts {
            let name = receipt["name"].as_str().expect("a receipt names its file");
            let copies = receipt["copies"].as_u64().unwrap_or(0);
            assert!(
                copies >= 1,
                "{}: a receipt without a copy: {receipt}",
                user.login
            );
            let size = user.files.iter().find(|(n, _)| n == name).map(|f| f.1);
            assert_eq!(Some(receipt["size"].as_u64().unwrap()), size, "{receipt}");
            names.push(name.to_string());
        }
        let notes = stderr.matches("resuming in").count();
        if notes > 0 {
            retried += 1;
            for note in stderr.lines().filter(|l| l.contains("resuming in")) {
                eprintln!("  {}: {note}", user.login);
            }
        }
        let attempts: Vec<u64> = receipts
            .iter()
            .map(|r| r["attempts"].as_u64().unwrap_or(0))
            .collect();
        eprintln!(
            "{}: exit {:?} after {:.1} s, {} receipts, attempts {attempts:?}, copies {:?}, {notes} retry notes",
            user.login,
            code.code(),
            b.finished.unwrap_or_default().as_secs_f64(),
            receipts.len(),
            receipts.iter().map(|r| r["copies"].as_u64().unwrap_or(0)).collect::<Vec<_>>(),
        );
        if !code.success() || names.len() != user.files.len() {
            assert!(
                !stderr.trim().is_empty(),
                "{}: the backup failed without saying why",
                user.login
            );
            failed.push(format!(
                "{}: exit {:?}, {} of {} files acknowledged: {}",
                user.login,
                code.code(),
                names.len(),
                user.files.len(),
                tail(&stderr, 6)
            ));
        }
        acked.push(names);
    }
    let acked_files: usize = acked.iter().map(Vec::len).sum();
    eprintln!(
        "backups: {:.1} s wall for {:.0} MB ({:.1} MB/s overall); {acked_files} of {} files acknowledged; {} clients failed; {retried} clients retried",
        backup_wall.as_secs_f64(),
        total as f64 / 1e6,
        total as f64 / 1e6 / backup_wall.as_secs_f64(),
        USERS * 3,
        failed.len()
    );

    // Each user sees exactly their own files.
    for (user, names) in users.iter().zip(&acked) {
        let out = client(&user.root, &["--manager", &manager, "--json", "ls"]);
        assert!(out.status.success(), "{}: ls failed", user.login);
        let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let entry: Value = serde_json::from_str(line).unwrap();
                entry["name"].as_str().unwrap().to_string()
            })
            .collect();
        listed.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(listed, want, "{}'s listing", user.login);
    }

    // Every acknowledged file restores byte-identical, right away.
    let t = Instant::now();
    let first = restore_everything(&users, &acked, &manager);
    let first_restore = t.elapsed();
    eprintln!(
        "first restore pass: {:.1} s, {} failures",
        first_restore.as_secs_f64(),
        first.len()
    );

    // Then once nothing is under-replicated, again.
    let healed = wait_for_status(
        &users[0].root,
        &manager,
        "nothing under-replicated",
        Duration::from_secs(180),
        |s| {
            s["under_replicated"] == 0
                && s["servers"]
                    .as_array()
                    .is_some_and(|v| v.iter().all(|s| s["state"] == "up"))
        },
    );
    let final_status = status(&users[0].root, &manager).unwrap();
    eprintln!(
        "nothing under-replicated {:.1} s later ({} files, {} repaired)",
        healed.as_secs_f64(),
        final_status["files"],
        final_status["repaired_files"]
    );
    let t = Instant::now();
    let second = restore_everything(&users, &acked, &manager);
    eprintln!(
        "second restore pass: {:.1} s, {} failures; whole test {:.1} s",
        t.elapsed().as_secs_f64(),
        second.len(),
        t0.elapsed().as_secs_f64()
    );

    if !(failed.is_empty() && first.is_empty() && second.is_empty()) {
        eprintln!(
            "--- {} before the kill (tail):\n{}",
            cluster.servers[VICTIM].name,
            tail(
                &std::fs::read_to_string(&killed_log).unwrap_or_default(),
                30
            )
        );
        eprintln!("--- manager (tail):\n{}", tail(&cluster.manager.log(), 40));
    }
    assert!(first.is_empty(), "restores failed: {first:#?}");
    assert!(
        second.is_empty(),
        "restores after healing failed: {second:#?}"
    );
    assert_eq!(
        final_status["files"].as_u64(),
        Some(acked_files as u64),
        "the catalog holds exactly the acknowledged files"
    );
    assert!(failed.is_empty(), "backups failed: {failed:#?}");
}
