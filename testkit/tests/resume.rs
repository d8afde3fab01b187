//! Resumable uploads on an in-process cluster: an upload cut off midway
//! leaves its durable chunks on the holders; `UploadStatus` reports them;
//! a resumed upload sends only the rest and the file restores whole, even
//! when placement moved; a resume built on chunks nobody has is refused
//! and commits nothing.

use dupla::chunk::CHUNK_SIZE;
use dupla_client::backup::{resolve, BackupOptions};
use dupla_client::resume::Unfinished;
use dupla_client::Client;
use dupla_testkit::raw;
use dupla_testkit::{bounded, test_bytes, TestCluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_upload_resumes_with_only_the_rest() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(48 * CHUNK_SIZE + 77, 21);
        let name = "big/resumable.bin";
        raw::interrupted_upload(&cluster, &cluster.at(0), name, &data, 40, 32).await;
        // The cluster reports what is durable: at least the committed batches.
        let held = raw::held_chunks(&cluster.at(1), name, &data).await;
        assert!((32..=40).contains(&held), "held {held}");
        let receipt = raw::upload_raw(&cluster.at(2), raw::resumed_messages(name, &data, held))
            .await
            .expect("the resumed upload completes");
        assert_eq!(receipt.copies, 2);
        for i in 0..3 {
            raw::assert_restores(&cluster.at(i), name, &data).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_after_the_primary_died_copies_the_held_part_to_the_new_holder() {
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        let data = test_bytes(40 * CHUNK_SIZE, 22);
        // Placed on 0 then 1; the upload enters at 2, which only forwards.
        let name = cluster
            .name_placed("moved", data.len() as u64, |o| o[..2] == [0, 1])
            .await;
        raw::interrupted_upload(&cluster, &cluster.at(2), &name, &data, 36, 32).await;
        // The primary dies; once it is suspect, placement is 1 then 2.
        cluster.stop_server(0).await;
        cluster
            .wait_for_status(|s| {
                s.servers
                    .iter()
                    .filter(|s| s.state() == dupla::v1::ServerState::Up)
                    .count()
                    == 2
            })
            .await;
        let held = raw::held_chunks(&cluster.at(1), &name, &data).await;
        assert!(held >= 32, "the replica's copy counts: held {held}");
        let receipt = raw::upload_raw(&cluster.at(1), raw::resumed_messages(&name, &data, held))
            .await
            .expect("the resumed upload completes on the new placement");
        assert_eq!(receipt.copies, 2);
        raw::assert_restores(&cluster.at(2), &name, &data).await;
        raw::assert_restores(&cluster.at(1), &name, &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_of_chunks_nobody_holds_is_refused_and_commits_nothing() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let data = test_bytes(3 * CHUNK_SIZE, 23);
        assert_eq!(
            raw::held_chunks(&cluster.at(0), "ghost.bin", &data).await,
            0
        );
        let err = raw::upload_raw(&cluster.at(0), raw::resumed_messages("ghost.bin", &data, 2))
            .await
            .expect_err("no server holds those chunks");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(cluster.status().await.files, 0);
        // The same file sent whole is fine.
        raw::upload(&cluster.at(0), "ghost.bin", &data)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_resumes_an_unfinished_backup_by_itself() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let root = tempfile::tempdir().unwrap();
        let data = test_bytes(24 * CHUNK_SIZE + 5, 24);
        std::fs::write(root.path().join("video.bin"), &data).unwrap();
        // Cut as the client cuts it, so the client's resume finds its chunks.
        let messages = raw::cdc_upload_messages("video.bin", &data);
        raw::interrupted_upload_of(&cluster, &cluster.at(0), messages, 20, 16).await;
        let first_16: usize = dupla::chunk::cut(&data)[..16].iter().map(|c| c.len()).sum();
        // An earlier run of the client left its note.
        let note = Unfinished::for_name(root.path(), "video.bin");
        note.start("video.bin", data.len() as u64).unwrap();
        let client = Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone());
        let file = resolve(root.path(), std::path::Path::new("video.bin")).unwrap();
        let report = client
            .backup_resolved(root.path(), &file, BackupOptions::default())
            .await
            .unwrap();
        assert!(report.resumed_bytes >= first_16 as u64, "{report:?}");
        // Only the rest was sent: acknowledged bytes never twice.
        assert_eq!(report.sent_bytes, data.len() as u64 - report.resumed_bytes);
        assert_eq!(report.copies, 2);
        assert!(!note.exists(), "the note goes with the receipt");
        raw::assert_restores(&cluster.at(1), "video.bin", &data).await;
        // Without a note, a backup sends everything and asks nothing.
        let again = client
            .backup_resolved(root.path(), &file, BackupOptions::default())
            .await
            .unwrap();
        assert_eq!(
            (again.resumed_bytes, again.sent_bytes),
            (0, data.len() as u64)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_restore_continues_after_the_part_that_checks_out() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let data = test_bytes(12 * CHUNK_SIZE + 9, 25);
        raw::upload(&cluster.at(0), "film.bin", &data)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("film.bin");
        let part = dir.path().join(".film.bin.dupla-part");
        let client = Client::new(cluster.manager_addr(), None).with_token(cluster.token.clone());

        // An earlier restore stopped 5 MiB and a bit in: 5 whole chunks count.
        std::fs::write(&part, &data[..5 * CHUNK_SIZE + 300]).unwrap();
        let report = client.restore("film.bin", &dest, false).await.unwrap();
        assert_eq!(report.resumed_bytes, 5 * CHUNK_SIZE as u64);
        assert!(std::fs::read(&dest).unwrap() == data);
        assert!(!part.exists());

        // A part whose second chunk rotted on disk: only the first is kept.
        std::fs::remove_file(&dest).unwrap();
        let mut rotten = data[..4 * CHUNK_SIZE].to_vec();
        rotten[CHUNK_SIZE + 5] ^= 0xff;
        std::fs::write(&part, &rotten).unwrap();
        let report = client.restore("film.bin", &dest, false).await.unwrap();
        assert_eq!(report.resumed_bytes, CHUNK_SIZE as u64);
        assert!(std::fs::read(&dest).unwrap() == data);

        // A part that already holds the whole file (it stopped just before
        // the rename): nothing is downloaded.
        std::fs::remove_file(&dest).unwrap();
        std::fs::write(&part, &data).unwrap();
        let report = client.restore("film.bin", &dest, false).await.unwrap();
        assert_eq!(report.resumed_bytes, data.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == data);

        // A part of some other file: nothing of it is kept.
        std::fs::write(&part, test_bytes(3 * CHUNK_SIZE, 99)).unwrap();
        let report = client.restore("film.bin", &dest, false).await.unwrap();
        assert_eq!(report.resumed_bytes, 0);
        assert!(std::fs::read(&dest).unwrap() == data);
    })
    .await;
}
