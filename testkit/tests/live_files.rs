//! Backups of files something is writing at the same time, through the
//! client library on an in-process cluster: a log appended to all along is
//! backed up as it was when read (never failing the run), and a file
//! rewritten over and over is either backed up as read or left out of a
//! snapshot that is still recorded with everything else.

use dupla_client::output::Output;
use dupla_client::snapshot_backup::{self, Partial, RunOptions};
use dupla_client::Client;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const JSON: Output = Output { json: true };

fn client(cluster: &TestCluster) -> Client {
    Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone())
}

fn options(paths: &[&str]) -> RunOptions {
    RunOptions {
        paths: paths.iter().map(PathBuf::from).collect(),
        ..Default::default()
    }
}

/// Run `write` over and over on a thread until the returned guard is
/// dropped (then waits for the thread), so the file changes during
/// everything in between.
fn keep_writing(mut write: impl FnMut(u64) + Send + 'static) -> impl Drop {
    struct Writer(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Writer {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(thread) = self.1.take() {
                thread.join().unwrap();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut round = 0;
        while !stopped.load(Ordering::Relaxed) {
            write(round);
            round += 1;
        }
    });
    Writer(stop, Some(thread))
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_appended_to_during_the_backup_is_backed_up_as_it_was() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "logs/app.log", &test_bytes(6 << 20, 1));
        write(root, "logs/other.txt", b"steady");
        let log = root.join("logs/app.log");
        let appender = {
            let log = log.clone();
            keep_writing(move |round| {
                let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                writeln!(file, "log line {round}").unwrap();
            })
        };
        // Used to fail the whole run (no snapshot) after six attempts.
        let summary = snapshot_backup::run(&client, root, &options(&["logs"]), JSON)
            .await
            .expect("a growing log does not fail the run");
        drop(appender);
        assert_eq!(summary.files_failed, 0);
        assert_eq!(summary.files_new, 2);

        // What was stored is the log as it was when read: a prefix of it
        // now, at least as long as it was before the run.
        let stored = raw::download(&cluster.at(0), "logs/app.log").await.unwrap();
        let now = std::fs::read(&log).unwrap();
        assert!(stored.len() >= 6 << 20 && stored.len() <= now.len());
        assert!(now.starts_with(&stored), "the stored log is not a prefix");
        raw::assert_restores(&cluster.at(1), "logs/other.txt", b"steady").await;

        // The next run sees the new size and sends the log again.
        let again = snapshot_backup::run(&client, root, &options(&["logs"]), JSON)
            .await
            .unwrap();
        assert_eq!((again.files_changed, again.files_unchanged), (1, 1));
        raw::assert_restores(&cluster.at(0), "logs/app.log", &now).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_rewritten_all_along_never_costs_the_run_its_snapshot() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (big, small) = (test_bytes(4 << 20, 2), test_bytes(1 << 20, 3));
        write(root, "db/table.bin", &big);
        write(root, "db/notes.txt", b"kept");
        let table = root.join("db/table.bin");
        let rewriter = {
            let (table, big, small) = (table.clone(), big.clone(), small.clone());
            // Shrinks and grows in turn, each state written whole.
            keep_writing(move |round| {
                let data = if round % 2 == 0 { &small } else { &big };
                std::fs::write(&table, data).unwrap();
            })
        };
        let result = snapshot_backup::run(&client, root, &options(&["db"]), JSON).await;
        drop(rewriter);
        // Either outcome is right, depending on when the writes fell: the
        // file read as it was at one moment (bytes written meanwhile may mix
        // in, as with any backup tool that does not snapshot the
        // filesystem; what is stored is exactly what was read and hashed),
        // or left out with the run saying so (exit status 3). A run that
        // fails outright, recording nothing, is not.
        match result {
            Ok(summary) => {
                assert_eq!(summary.files_failed, 0);
                let stored = raw::download(&cluster.at(0), "db/table.bin").await.unwrap();
                assert!(stored.len() <= big.len());
            }
            Err(e) => {
                let partial = e
                    .downcast_ref::<Partial>()
                    .unwrap_or_else(|| panic!("the run failed outright: {e:#}"));
                assert!(partial.0.contains("without 1 file"), "{partial}");
            }
        }
        assert_eq!(client.snapshots(&[]).await.unwrap().len(), 1);
        raw::assert_restores(&cluster.at(1), "db/notes.txt", b"kept").await;
    })
    .await;
}
