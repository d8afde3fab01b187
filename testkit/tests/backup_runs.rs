//! Directory backup runs cut off midway, through the client library on an
//! in-process cluster: a run dropped as Ctrl-C drops it keeps the journal of
//! the files it committed (the rerun does not send them again), and a run
//! whose manager goes away stops starting files after the first one fails,
//! says to run the same backup again (not `dupla backup FILE --resume`), and
//! keeps the journal too.
//!
//! Both drive the run to the same known point with holds before each
//! upload's commit: every upload slot of the run held, a few files
//! committed, the rest not started.

use dupla_client::output::Output;
use dupla_client::snapshot_backup::{self, RunOptions, RunSummary, RUN_CONCURRENCY};
use dupla_client::Client;
use dupla_server::faults::{Action, FaultPlan, Step, Trigger};
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use futures::FutureExt;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

const JSON: Output = Output { json: true };

/// Bytes of each file of the runs.
const FILE_SIZE: usize = 64 << 10;

/// Files committed before the run is cut off.
const COMMITTED: usize = 3;

fn client(cluster: &TestCluster) -> Client {
    Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone())
}

fn options(paths: &[&str]) -> RunOptions {
    RunOptions {
        paths: paths.iter().map(PathBuf::from).collect(),
        ..Default::default()
    }
}

/// `n` files `many/fNN.bin` under `root`.
fn write_files(root: &Path, n: usize) {
    std::fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..n {
        std::fs::write(
            root.join(format!("many/f{i:02}.bin")),
            test_bytes(FILE_SIZE, i as u64),
        )
        .unwrap();
    }
}

/// The lines of the run journal (`ROOT/.dupla/run.jsonl`).
fn journal_lines(root: &Path) -> usize {
    std::fs::read_to_string(root.join(".dupla/run.jsonl"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// The notes of uploads started and not finished (`ROOT/.dupla/unfinished/`).
fn unfinished_notes(root: &Path) -> usize {
    std::fs::read_dir(root.join(".dupla/unfinished"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Holds before `Manager/Commit` on every server: more than a run can
/// reach on any one of them, so each upload that reaches its commit waits
/// until the test releases it.
struct Holds {
    triggers: Vec<Trigger>,
    released: Vec<bool>,
}

impl Holds {
    fn new(cluster: &TestCluster) -> Holds {
        let per_server = 2 * RUN_CONCURRENCY + COMMITTED;
        let triggers: Vec<Trigger> = (0..cluster.servers.len())
            .flat_map(|i| (0..per_server).map(move |_| (i, Step::BeforeCommit, Action::Hold)))
            .map(|(i, step, action)| cluster.faults(i).add(step, action))
            .collect();
        let released = vec![false; triggers.len()];
        Holds { triggers, released }
    }

    fn fired(&self) -> usize {
        self.triggers.iter().filter(|t| t.has_fired()).count()
    }

    /// Wait until `n` uploads reached their commit.
    async fn wait_fired(&self, n: usize) {
        while self.fired() < n {
            let waiting: Vec<_> = self
                .triggers
                .iter()
                .filter(|t| !t.has_fired())
                .map(|t| t.fired().boxed())
                .collect();
            futures::future::select_all(waiting).await;
        }
    }

    /// Let `n` held uploads commit.
    fn release_some(&mut self, n: usize) {
        let mut left = n;
        for (trigger, released) in self.triggers.iter().zip(self.released.iter_mut()) {
            if left > 0 && trigger.has_fired() && !*released {
                trigger.release();
                *released = true;
                left -= 1;
            }
        }
        assert_eq!(left, 0, "fewer than {n} uploads were held");
    }

    /// Let every upload through, held or to come.
    fn release_all(&mut self) {
        for (trigger, released) in self.triggers.iter().zip(self.released.iter_mut()) {
            trigger.release();
            *released = true;
        }
    }
}

/// Start a run of `many` (`n` files) in a task and bring it to a known
/// point: [`COMMITTED`] files committed, [`RUN_CONCURRENCY`] uploads held
/// before their commit, the other files not started.
async fn run_to_held_point(
    cluster: &TestCluster,
    root: &Path,
    n: usize,
) -> (
    Holds,
    JoinHandle<Result<RunSummary, impl std::fmt::Display + std::fmt::Debug>>,
) {
    assert!(n > COMMITTED + RUN_CONCURRENCY);
    write_files(root, n);
    let mut holds = Holds::new(cluster);
    let task = {
        let (client, root) = (client(cluster), root.to_path_buf());
        tokio::spawn(async move {
            snapshot_backup::run(&client, &root, &options(&["many"]), JSON).await
        })
    };
    // Every slot of the run held: nothing committed yet.
    holds.wait_fired(RUN_CONCURRENCY).await;
    // A few commit; each slot they free starts the next file, which is held
    // in turn. The run only starts a file once it has dealt with the one
    // that ended, so once as many more are held, those committed were seen.
    holds.release_some(COMMITTED);
    holds.wait_fired(RUN_CONCURRENCY + COMMITTED).await;
    assert_eq!(holds.fired(), RUN_CONCURRENCY + COMMITTED);
    (holds, task)
}

/// The same backup of `n` files run again: the files committed before the
/// cut count as unchanged and are not sent again.
async fn rerun_sends_only_the_rest(cluster: &TestCluster, root: &Path, n: usize) {
    let again = snapshot_backup::run(&client(cluster), root, &options(&["many"]), JSON)
        .await
        .expect("the rerun finishes");
    assert_eq!(again.files_unchanged, COMMITTED as u64, "{again:?}");
    assert_eq!(again.files_new, (n - COMMITTED) as u64, "{again:?}");
    assert!(
        again.sent_bytes <= ((n - COMMITTED) * FILE_SIZE) as u64,
        "the files committed before the cut were sent again: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cut_off_midway_keeps_the_journal_of_what_it_committed() {
    bounded(async {
        let cluster = TestCluster::start_with_faults(2, |_| FaultPlan::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let n = 24;
        let (mut holds, task) = run_to_held_point(&cluster, root, n).await;

        // Ctrl-C in `dupla` drops the run's future, as this abort does.
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        // Before the fix the journal was written only once every upload had
        // ended, so a run cut off left none.
        assert_eq!(
            journal_lines(root),
            COMMITTED,
            "the journal lists each file committed before the cut"
        );
        holds.release_all();
        assert!(
            client(&cluster).snapshots(&[]).await.unwrap().is_empty(),
            "a run cut off records no snapshot"
        );

        // Running it again sends only the rest.
        rerun_sends_only_the_rest(&cluster, root, n).await;
        assert_eq!(journal_lines(root), 0, "the journal goes with the snapshot");
        for i in [0, n - 1] {
            raw::assert_restores(
                &cluster.at(0),
                &format!("many/f{i:02}.bin"),
                &test_bytes(FILE_SIZE, i as u64),
            )
            .await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_manager_is_gone_stops_starting_files() {
    bounded(async {
        let mut cluster = TestCluster::start_with_faults(2, |_| FaultPlan::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let n = 30;
        let (mut holds, task) = run_to_held_point(&cluster, root, n).await;

        // The manager goes away; the held uploads then fail at their commit
        // and again at every retry.
        cluster.stop_manager().await;
        holds.release_all();
        let err = task
            .await
            .unwrap()
            .expect_err("a run without its manager fails");
        let text = format!("{err:#}");
        // Before the fix every remaining file was started, each with its
        // own retries, and each said to run `dupla backup FILE --resume`.
        let not_started = n - COMMITTED - RUN_CONCURRENCY;
        assert!(
            text.contains(&format!("{not_started} files were not attempted")),
            "{text}"
        );
        assert!(text.contains("Run the same backup again"), "{text}");
        assert!(!text.contains("--resume"), "{text}");
        assert!(
            unfinished_notes(root) <= RUN_CONCURRENCY,
            "files were started after the first failure: {} unfinished",
            unfinished_notes(root)
        );
        assert_eq!(
            journal_lines(root),
            COMMITTED,
            "the journal keeps what committed"
        );

        // With the manager back, the same backup finishes without sending
        // those again.
        cluster.start_manager_again().await;
        cluster.wait_for_up(2).await;
        rerun_sends_only_the_rest(&cluster, root, n).await;
    })
    .await;
}
