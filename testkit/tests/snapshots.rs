//! Snapshots end to end through the client library on an in-process
//! cluster: directory backups with excludes, links, modes and mtimes;
//! restores of every snapshot compared entry by entry; incremental runs that
//! send nothing or only the changed chunks; retention followed by garbage
//! collection; separate users; paths outside the root; a server lost mid-run.

use dupla::kv::{Kv, SledKv};
use dupla::rpc::Secret;
use dupla::v1::{CollectGarbageRequest, LookupRequest};
use dupla::Hash;
use dupla_client::cli::ForgetArgs;
use dupla_client::output::Output;
use dupla_client::snapshot_backup::{self, Partial, RunOptions, RunSummary};
use dupla_client::snapshot_restore;
use dupla_client::Client;
use dupla_server::faults::{Action, FaultPlan, Step};
use dupla_testkit::cluster::TEST_SECRET;
use dupla_testkit::{bounded, raw, test_bytes, TestCluster};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const JSON: Output = Output { json: true };

fn client(cluster: &TestCluster, token: &str) -> Client {
    Client::new(cluster.manager_addr(), None).with_token(token.to_string())
}

fn options(paths: &[&str]) -> RunOptions {
    RunOptions {
        paths: paths.iter().map(PathBuf::from).collect(),
        ..Default::default()
    }
}

async fn backup(client: &Client, root: &Path, options: &RunOptions) -> RunSummary {
    snapshot_backup::run(client, root, options, JSON)
        .await
        .expect("backup run")
}

/// What a tree looks like: per relative path, its kind, mode, mtime and
/// content (bytes, or a link's target).
#[derive(Debug, PartialEq)]
enum Node {
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    File {
        mode: u32,
        mtime_ns: i64,
        data: Vec<u8>,
    },
    Link {
        target: String,
        mtime_ns: i64,
    },
}

fn manifest(dir: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let mode = meta.mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&path).unwrap().to_string_lossy().into(),
                mtime_ns,
            }
        } else if meta.is_dir() {
            walk(base, &path, out);
            Node::Dir { mode, mtime_ns }
        } else {
            Node::File {
                mode,
                mtime_ns,
                data: std::fs::read(&path).unwrap(),
            }
        };
        out.insert(rel, node);
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Restore snapshot `id` into `ROOT/into` and return the manifest of the
/// restored `docs`.
async fn restored(client: &Client, root: &Path, id: &str, into: &str) -> BTreeMap<String, Node> {
    snapshot_restore::restore_tree(client, root, id, Path::new(into), &[], JSON)
        .await
        .expect("restore");
    manifest(&root.join(into).join("docs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_snapshot_restores_exactly_the_tree_it_saw() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "docs/a.txt", b"hello");
        write(root, "docs/empty.txt", b"");
        write(root, "docs/sub/deep/big.bin", &test_bytes(5 << 20, 1));
        write(root, "docs/secret.txt", b"only me");
        std::fs::set_permissions(
            root.join("docs/secret.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        write(root, "docs/skip.tmp", b"excluded by --exclude");
        write(root, "docs/.duplaignore", b"cache/\n");
        write(root, "docs/cache/x.bin", b"excluded by .duplaignore");
        std::fs::create_dir_all(root.join("docs/emptydir")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("docs/link")).unwrap();
        let old_mtime = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
        std::fs::File::open(root.join("docs/a.txt"))
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
        let mut run = options(&["docs"]);
        run.excludes = vec!["*.tmp".into()];

        let mut first_tree = manifest(&root.join("docs"));
        let first = backup(&client, root, &run).await;
        assert_eq!(first.files_new, 5, "{first:?}");
        assert_eq!(first.links, 1);
        // Excluded paths are not in the snapshot, so not restored.
        first_tree.remove("skip.tmp");
        first_tree.remove("cache");
        first_tree.remove("cache/x.bin");

        // Edit, delete, add; the big file gets 1 MiB more.
        write(root, "docs/a.txt", b"hello, again");
        std::fs::remove_file(root.join("docs/secret.txt")).unwrap();
        write(root, "docs/new.txt", b"new");
        let mut big = std::fs::read(root.join("docs/sub/deep/big.bin")).unwrap();
        big.extend_from_slice(&test_bytes(1 << 20, 2));
        write(root, "docs/sub/deep/big.bin", &big);
        let mut second_tree = manifest(&root.join("docs"));
        second_tree.remove("skip.tmp");
        second_tree.remove("cache");
        second_tree.remove("cache/x.bin");
        let second = backup(&client, root, &run).await;
        assert_eq!(
            (
                second.files_new,
                second.files_changed,
                second.files_unchanged
            ),
            (1, 2, 2),
            "{second:?}"
        );
        assert!(second.sent_bytes <= 3 << 20, "{second:?}");
        assert_eq!(second.parent, first.snapshot);

        let one = restored(&client, root, &first.snapshot, "r1").await;
        assert_eq!(one, first_tree);
        let two = restored(&client, root, &second.snapshot, "r2").await;
        assert_eq!(two, second_tree);
        assert!(!root.join("r2/docs/secret.txt").exists());

        // Nothing changed: nothing is read or sent.
        let third = backup(&client, root, &run).await;
        assert_eq!(third.sent_bytes, 0, "{third:?}");
        assert_eq!(third.files_unchanged, 5);
        assert_eq!((third.files_new, third.files_changed), (0, 0));
        assert_eq!(client.snapshots(&[]).await.unwrap().len(), 3);

        // Other paths beside docs: docs is still compared with its own
        // latest snapshot, and only the new directory is sent.
        write(root, "other/x.txt", b"x");
        let mut wider = options(&["docs", "other"]);
        wider.excludes = vec!["*.tmp".into()];
        let mixed = backup(&client, root, &wider).await;
        assert_eq!(
            (mixed.files_new, mixed.files_unchanged, mixed.sent_bytes),
            (1, 5, 1),
            "{mixed:?}"
        );
        assert_eq!(mixed.parent, third.snapshot);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_and_insertions_send_about_one_chunk() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let original = test_bytes(20 << 20, 3);
        write(root, "data/log.bin", &original);
        let run = options(&["data"]);
        let first = backup(&client, root, &run).await;
        assert_eq!(first.sent_bytes, 20 << 20);

        let mut appended = original.clone();
        appended.extend_from_slice(&test_bytes(1 << 20, 4));
        write(root, "data/log.bin", &appended);
        let second = backup(&client, root, &run).await;
        assert!(
            second.sent_bytes <= (1 << 20) + (2 << 20),
            "an append of 1 MiB sent {}",
            second.sent_bytes
        );

        let mut inserted = vec![b'!'];
        inserted.extend_from_slice(&appended);
        write(root, "data/log.bin", &inserted);
        let third = backup(&client, root, &run).await;
        assert!(
            third.sent_bytes <= 2 << 20,
            "a one-byte insertion sent {}",
            third.sent_bytes
        );
        snapshot_restore::restore_file(
            &client,
            root,
            &first.snapshot,
            "data/log.bin",
            Some(&root.join("v1.bin")),
            JSON,
        )
        .await
        .unwrap();
        assert!(std::fs::read(root.join("v1.bin")).unwrap() == original);
        raw::assert_restores(&cluster.at(0), "data/log.bin", &inserted).await;
    })
    .await;
}

/// Date every chunk file of server `i` back by two days (past the grace).
fn age_chunks(cluster: &TestCluster, i: usize) {
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let chunks = cluster.servers[i].data.join("chunks");
    for shard in std::fs::read_dir(chunks).unwrap().flatten() {
        for file in std::fs::read_dir(shard.path()).unwrap().flatten() {
            std::fs::File::open(file.path())
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_keeps_what_the_policy_keeps_and_gc_reclaims_the_rest() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let run = options(&["f.bin"]);
        let mut ids = Vec::new();
        let mut contents = Vec::new();
        for seed in 0..3 {
            let data = test_bytes(2 << 20, 10 + seed);
            write(root, "f.bin", &data);
            ids.push(backup(&client, root, &run).await.snapshot);
            contents.push(data);
        }
        let mut manager = cluster.manager_client().await;
        let first_chunks: Vec<Hash> = manager
            .lookup(cluster.as_user(LookupRequest {
                name: "f.bin".into(),
                version: 1,
            }))
            .await
            .unwrap()
            .into_inner()
            .chunks
            .iter()
            .map(|c| Hash::from_slice(c, "chunk").unwrap())
            .collect();

        let args = ForgetArgs {
            keep_last: 1,
            ..Default::default()
        };
        dupla_client::forget::command(&client, &args, JSON)
            .await
            .unwrap();
        let left: Vec<String> = client
            .snapshots(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(left, vec![ids[2].clone()]);
        let gone =
            snapshot_restore::restore_tree(&client, root, &ids[0], Path::new("r0"), &[], JSON)
                .await
                .unwrap_err();
        assert!(gone.to_string().contains("no snapshot"), "{gone}");
        let version_gone = manager
            .lookup(cluster.as_user(LookupRequest {
                name: "f.bin".into(),
                version: 1,
            }))
            .await
            .unwrap_err();
        assert_eq!(version_gone.code(), tonic::Code::NotFound);

        // Past the grace period, every server drops the forgotten chunks.
        let secret = Secret::new(TEST_SECRET).unwrap();
        for i in 0..2 {
            age_chunks(&cluster, i);
            raw::storage(&cluster.at(i))
                .await
                .collect_garbage(secret.request(CollectGarbageRequest {}))
                .await
                .unwrap();
            for hash in &first_chunks {
                assert!(
                    !cluster.chunk_path(i, hash).exists(),
                    "server {i} kept {hash}"
                );
            }
        }
        snapshot_restore::restore_file(
            &client,
            root,
            &ids[2],
            "f.bin",
            Some(&root.join("kept.bin")),
            JSON,
        )
        .await
        .unwrap();
        assert!(std::fs::read(root.join("kept.bin")).unwrap() == contents[2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_see_only_their_snapshots_and_paths_stay_in_the_root() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let ada = client(&cluster, &cluster.token);
        let bob = client(&cluster, &cluster.new_user("bob").await);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(&root, "mine/a.txt", b"ada's");
        let id = backup(&ada, &root, &options(&["mine"])).await.snapshot;
        assert!(bob.snapshots(&[]).await.unwrap().is_empty());
        assert!(bob.versions("mine/a.txt").await.unwrap().is_empty());
        let err = snapshot_restore::restore_tree(&bob, &root, &id, Path::new("out"), &[], JSON)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no snapshot"), "{err}");
        assert_eq!(ada.versions("mine/a.txt").await.unwrap().len(), 1);

        std::fs::write(dir.path().join("outside.txt"), b"x").unwrap();
        let outside = snapshot_backup::run(&ada, &root, &options(&["../outside.txt"]), JSON)
            .await
            .unwrap_err();
        assert!(outside.to_string().contains("outside"), "{outside}");
        let escape =
            snapshot_restore::restore_tree(&ada, &root, &id, Path::new("../out"), &[], JSON)
                .await
                .unwrap_err();
        assert!(escape.to_string().contains("outside"), "{escape}");
        assert!(!dir.path().join("out").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_lost_mid_run_leaves_no_false_snapshot_and_the_rerun_finishes() {
    bounded(async {
        let cluster = TestCluster::start_with_faults(3, |_| FaultPlan::new()).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // Each server holds the first upload it enters just before its
        // commit: the run cannot end before the test lets it go on.
        let holds = [0, 1, 2].map(|i| cluster.faults(i).add(Step::BeforeCommit, Action::Hold));
        for i in 0..40 {
            write(
                &root,
                &format!("many/f{i:02}.bin"),
                &test_bytes(256 << 10, i),
            );
        }
        let tree = manifest(&root.join("many"));
        let run = options(&["many"]);
        let task = {
            let (client, root, run) = (client.clone(), root.clone(), run.clone());
            tokio::spawn(async move { snapshot_backup::run(&client, &root, &run, JSON).await })
        };
        // Mid-run (an upload is held before its commit), server 1 crashes,
        // whether it is the entry of the held upload or not.
        tokio::select! {
            _ = holds[0].fired() => {}
            _ = holds[1].fired() => {}
            _ = holds[2].fired() => {}
        }
        cluster.faults(1).kill();
        for hold in &holds {
            hold.release();
        }
        let first = task.await.unwrap();
        let snapshots = client.snapshots(&[]).await.unwrap();
        match &first {
            // Retries through the others finished it.
            Ok(summary) => assert_eq!(snapshots.len(), 1, "{summary:?}"),
            // Or it stopped, and recorded nothing.
            Err(_) => assert!(snapshots.is_empty()),
        }
        let again = backup(&client, &root, &run).await;
        if first.is_err() {
            assert!(again.files_unchanged > 0, "the rerun sent everything again");
        }
        let restored = restored_many(&client, &root, &again.snapshot).await;
        assert_eq!(restored, tree);
    })
    .await;
}

async fn restored_many(client: &Client, root: &Path, id: &str) -> BTreeMap<String, Node> {
    snapshot_restore::restore_tree(client, root, id, Path::new("back"), &[], JSON)
        .await
        .expect("restore");
    manifest(&root.join("back/many"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_from_before_snapshots_becomes_a_first_snapshot() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let data = test_bytes((1 << 20) + 17, 5);
        raw::upload(&cluster.at(0), "old/notes.bin", &data)
            .await
            .unwrap();
        // Back to the layout before versions: one record per owner and name
        // in the tree `owned_files`, and no snapshots.
        cluster.stop_manager().await;
        {
            let kv = SledKv::open(&cluster.manager.data.join("db")).unwrap();
            for (key, value) in kv.scan_prefix("file_versions", b"").unwrap() {
                let record: serde_json::Value = serde_json::from_slice(&value).unwrap();
                let mut old_key = record["owner"].as_str().unwrap().as_bytes().to_vec();
                old_key.push(0);
                old_key.extend_from_slice(record["name"].as_str().unwrap().as_bytes());
                kv.put("owned_files", &old_key, &value).unwrap();
                kv.delete("file_versions", &key).unwrap();
            }
            kv.flush().unwrap();
        }
        cluster.start_manager_again().await;
        cluster.wait_for_up(2).await;
        let client = client(&cluster, &cluster.token);
        let snapshots = client.snapshots(&[]).await.unwrap();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].tags, vec!["adopted".to_string()]);
        assert_eq!(snapshots[0].files, 1);
        let dir = tempfile::tempdir().unwrap();
        snapshot_restore::restore_tree(
            &client,
            dir.path(),
            &snapshots[0].id,
            Path::new("back"),
            &[],
            JSON,
        )
        .await
        .unwrap();
        assert!(std::fs::read(dir.path().join("back/old/notes.bin")).unwrap() == data);
        raw::assert_restores(&cluster.at(1), "old/notes.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_corrupt_on_every_holder_is_sent_again_by_the_next_backup() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let data = test_bytes(3 << 20, 9);
        write(root, "data/precious.bin", &data);
        let run = options(&["data"]);
        assert_eq!(backup(&client, root, &run).await.sent_bytes, 3 << 20);

        // Both copies of its first chunk go bad on disk, and a read finds
        // them so (each holder reports its copy).
        let entry = cluster.lookup("data/precious.bin").await.unwrap();
        let hash = Hash::from_slice(&entry.chunks[0], "chunk").unwrap();
        for holder in &entry.holders {
            let i = cluster.server_index(&holder.id);
            std::fs::write(cluster.chunk_path(i, &hash), b"garbage").unwrap();
        }
        assert!(raw::download(&cluster.at(0), "data/precious.bin")
            .await
            .is_err());
        cluster.wait_for_status(|s| s.lost == 1).await;
        // A restore says so, rather than which holder failed how.
        let err = raw::download(&cluster.at(1), "data/precious.bin")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        assert!(err.message().contains("is lost"), "{err:?}");

        // The file itself did not change, yet the next backup does not call
        // it unchanged: the cluster has no good copy, so it goes again.
        let second = backup(&client, root, &run).await;
        assert_eq!(second.sent_bytes, 3 << 20);
        raw::assert_restores(&cluster.at(0), "data/precious.bin", &data).await;
        cluster.wait_for_status(|s| s.lost == 0).await;
    })
    .await;
}

/// Make every stored copy of `name`'s first chunk garbage on disk, as the
/// test above does.
fn corrupt_every_copy(cluster: &TestCluster, entry: &dupla::v1::FileEntry) {
    let hash = Hash::from_slice(&entry.chunks[0], "chunk").unwrap();
    for holder in &entry.holders {
        let i = cluster.server_index(&holder.id);
        std::fs::write(cluster.chunk_path(i, &hash), b"garbage").unwrap();
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_with_lost_files_restores_the_rest_and_is_partial() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let bad = ["tree/-dash.txt", "tree/private/lost.bin"];
        write(root, bad[0], b"a small file that will be lost");
        write(root, bad[1], &test_bytes(200 << 10, 31));
        write(root, "tree/good.txt", b"good");
        write(root, "tree/big.bin", &test_bytes(3 << 20, 32));
        write(root, "tree/private/ok.txt", b"ok beside a lost one");
        write(root, "tree/locked/inner.bin", &test_bytes(100 << 10, 33));
        std::os::unix::fs::symlink("good.txt", root.join("tree/link")).unwrap();
        // Directories with modes other than the default, and old mtimes,
        // set last (a read-only directory takes no more files).
        let old = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000, 42);
        for (path, mode) in [
            ("tree/locked", 0o555),
            ("tree/private", 0o710),
            ("tree", 0o750),
        ] {
            std::fs::File::open(root.join(path))
                .unwrap()
                .set_modified(old)
                .unwrap();
            set_mode(&root.join(path), mode);
        }
        let tree = manifest(&root.join("tree"));
        let id = backup(&client, root, &options(&["tree"])).await.snapshot;

        // A target that is a link leading nowhere is refused, and says so
        // (it was "I/O error: File exists").
        let nowhere = dir.path().join("elsewhere/evil");
        std::os::unix::fs::symlink(&nowhere, root.join("evillink")).unwrap();
        let err =
            snapshot_restore::restore_tree(&client, root, &id, Path::new("evillink"), &[], JSON)
                .await
                .unwrap_err();
        assert!(err.downcast_ref::<Partial>().is_none());
        assert!(err.to_string().contains("leads nowhere"), "{err:#}");
        assert!(!nowhere.exists());

        // Every copy of the two files goes bad, and reads find them so.
        for name in bad {
            corrupt_every_copy(&cluster, &cluster.lookup(name).await.unwrap());
            assert!(raw::download(&cluster.at(0), name).await.is_err());
        }
        cluster.wait_for_status(|s| s.lost == 2).await;

        let err = snapshot_restore::restore_tree(&client, root, &id, Path::new("out"), &[], JSON)
            .await
            .unwrap_err();
        // Partial, which `dupla` maps to exit status 3, naming both.
        assert!(err.downcast_ref::<Partial>().is_some(), "{err:#}");
        let message = err.to_string();
        assert!(message.contains("without 2 file(s)"), "{message}");
        for name in bad {
            assert!(message.contains(name), "{message}");
        }
        // Everything else is restored exactly, modes and mtimes of the
        // directories included; of the lost files nothing is left, not
        // even a part file.
        let mut expected = tree;
        expected.remove("-dash.txt");
        expected.remove("private/lost.bin");
        assert_eq!(manifest(&root.join("out/tree")), expected);
        let meta = std::fs::metadata(root.join("out/tree")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            1_500_000_000_000_000_042
        );

        // A subtree without a lost file restores in full.
        let whole = snapshot_restore::restore_tree(
            &client,
            root,
            &id,
            Path::new("again"),
            &["tree/locked".to_string()],
            JSON,
        )
        .await
        .expect("restore of a subtree with nothing lost");
        assert_eq!((whole.files, whole.files_failed), (1, 0));

        // Writable again, so the temporary directory can go.
        for base in ["tree", "out/tree", "again/tree"] {
            for path in ["locked", "private", ""] {
                let path = root.join(base).join(path);
                if path.exists() {
                    set_mode(&path, 0o755);
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_replaces_a_link_at_a_files_place_and_never_writes_through_it() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = client(&cluster, &cluster.token);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        write(&root, "proj/a.c", b"int main;");
        let summary = backup(&client, &root, &options(&["proj"])).await;

        // A link planted where the file goes, to a directory outside the
        // root: the file replaces the link; nothing lands outside.
        std::fs::create_dir_all(root.join("t1/proj")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("t1/proj/a.c")).unwrap();
        snapshot_restore::restore_tree(
            &client,
            &root,
            &summary.snapshot,
            Path::new("t1"),
            &[],
            JSON,
        )
        .await
        .expect("restore over a link");
        let placed = std::fs::symlink_metadata(root.join("t1/proj/a.c")).unwrap();
        assert!(placed.is_file(), "the link was replaced by the file");
        assert_eq!(
            std::fs::read(root.join("t1/proj/a.c")).unwrap(),
            b"int main;"
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "written outside the root"
        );

        // A real directory in the way is left alone, and the file is named
        // as failed (it used to land inside it, the directory's mode changed).
        std::fs::create_dir_all(root.join("t2/proj/a.c/inner")).unwrap();
        let mode_before = std::fs::metadata(root.join("t2/proj/a.c")).unwrap().mode();
        let err = snapshot_restore::restore_tree(
            &client,
            &root,
            &summary.snapshot,
            Path::new("t2"),
            &[],
            JSON,
        )
        .await
        .unwrap_err();
        let partial = err
            .downcast_ref::<snapshot_backup::Partial>()
            .unwrap_or_else(|| panic!("not partial: {err:#}"));
        assert!(partial.0.contains("proj/a.c"), "{partial}");
        let kept = std::fs::symlink_metadata(root.join("t2/proj/a.c")).unwrap();
        assert!(kept.is_dir());
        assert_eq!(
            kept.mode(),
            mode_before,
            "the directory's mode is untouched"
        );
        assert_eq!(
            std::fs::read_dir(root.join("t2/proj/a.c")).unwrap().count(),
            1
        );
    })
    .await;
}
