//! The client against a fake one-node cluster in this process: a minimal
//! Storage and Manager that keep files in memory and follow the wire
//! contract (storage.proto, manager.proto). It checks the client's side of
//! every stream — upload order and hashes, download verification, temporary
//! files, error messages — without depending on the real manager or server.

use bytes::Bytes;
use dupla::chunk::{self, CHUNK_SIZE};
use dupla::v1::{
    clock_server::ClockServer, greeter_server::GreeterServer, manager_server, storage_server,
    upload_request::Msg, AbortReply, AbortRequest, ClusterStatusReply, ClusterStatusRequest,
    CommitReply, CommitRequest, DownloadRequest, DownloadResponse, FetchChunksRequest, FileEntry,
    HeartbeatReply, HeartbeatRequest, ListReply, ListRequest, LookupRequest, Node, PlaceReply,
    PlaceRequest, RemoveReply, RemoveRequest, ServerStatus, StoreReceipt, StoreRequest,
    UploadReceipt, UploadRequest,
};
use dupla::Hash;
use dupla_client::cli::BenchArgs;
use dupla_client::Client;
use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Bound on every test: only a hang trips it.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the fake cluster holds, shared by its two services.
#[derive(Default)]
struct State {
    files: BTreeMap<String, (FileEntry, Vec<Bytes>)>,
    /// Tamper with chunk 0 of every download (rehashed, so only the
    /// catalog comparison can catch it).
    tamper: bool,
    /// Uploads that reached UploadEnd.
    uploads: usize,
}

#[derive(Clone)]
struct Fake {
    addr: String,
    state: Arc<Mutex<State>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl storage_server::Storage for Fake {
    async fn upload(
        &self,
        request: Request<Streaming<UploadRequest>>,
    ) -> Result<Response<UploadReceipt>, Status> {
        let mut stream = request.into_inner();
        let Some(UploadRequest {
            msg: Some(Msg::Begin(begin)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument("first message must be begin"));
        };
        dupla::name::validate(&begin.name)?;
        let mut chunks = Vec::new();
        let mut lengths = Vec::new();
        let mut received = 0u64;
        let mut hasher = blake3::Hasher::new();
        let end = loop {
            match stream.message().await? {
                Some(UploadRequest {
                    msg: Some(Msg::Chunk(c)),
                }) => {
                    let (_, len) =
                        chunk::verify_streamed(&c, chunks.len() as u64, received, begin.size)?;
                    received += len as u64;
                    lengths.push(len);
                    hasher.update(&c.data);
                    chunks.push(c);
                }
                Some(UploadRequest {
                    msg: Some(Msg::End(end)),
                }) => break end,
                _ => return Err(Status::invalid_argument("stream ended without end")),
            }
        };
        if received != begin.size || hasher.finalize().as_bytes()[..] != end.blake3[..] {
            return Err(Status::invalid_argument("size or blake3 mismatch"));
        }
        let entry = FileEntry {
            name: begin.name.clone(),
            size: begin.size,
            blake3: end.blake3,
            chunks: chunks.iter().map(|c| c.hash.clone()).collect(),
            chunk_size: 0,
            chunk_lengths: lengths,
            holders: vec![
                Node {
                    id: "fake".into(),
                    addr: self.addr.clone(),
                },
                Node {
                    id: "twin".into(),
                    addr: "127.0.0.1:9".into(),
                },
            ],
            committed_unix_ms: 1,
            version: 1,
            lost: false,
        };
        let mut state = self.state.lock().unwrap();
        state.uploads += 1;
        state.files.insert(
            begin.name,
            (entry.clone(), chunks.into_iter().map(|c| c.data).collect()),
        );
        Ok(Response::new(UploadReceipt {
            entry: Some(entry),
            copies: 2,
            entry_addr: self.addr.clone(),
        }))
    }

    type DownloadStream = BoxStream<DownloadResponse>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        use dupla::v1::download_response::Msg as D;
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        let (entry, data) = state
            .files
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no file {name}")))?;
        let mut messages = vec![Ok(DownloadResponse {
            msg: Some(D::Header(entry)),
        })];
        for (i, d) in data.into_iter().enumerate() {
            let mut d = d.to_vec();
            if state.tamper && i == 0 {
                d[0] ^= 1;
            }
            messages.push(Ok(DownloadResponse {
                msg: Some(D::Chunk(chunk::make(i as u64, d.into()))),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn store(
        &self,
        _: Request<Streaming<StoreRequest>>,
    ) -> Result<Response<StoreReceipt>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type FetchChunksStream = BoxStream<dupla::v1::Chunk>;

    async fn fetch_chunks(
        &self,
        _: Request<FetchChunksRequest>,
    ) -> Result<Response<Self::FetchChunksStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn replicate(
        &self,
        _: Request<dupla::v1::ReplicateRequest>,
    ) -> Result<Response<dupla::v1::ReplicateReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn scrub(
        &self,
        _: Request<dupla::v1::ScrubRequest>,
    ) -> Result<Response<dupla::v1::ScrubReport>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn upload_status(
        &self,
        _: Request<dupla::v1::UploadStatusRequest>,
    ) -> Result<Response<dupla::v1::UploadStatusReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn has_chunks(
        &self,
        _: Request<dupla::v1::HasChunksRequest>,
    ) -> Result<Response<dupla::v1::HasChunksReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn collect_garbage(
        &self,
        _: Request<dupla::v1::CollectGarbageRequest>,
    ) -> Result<Response<dupla::v1::CollectGarbageReport>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl manager_server::Manager for Fake {
    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn place(&self, _: Request<PlaceRequest>) -> Result<Response<PlaceReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn commit(&self, _: Request<CommitRequest>) -> Result<Response<CommitReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn abort(&self, _: Request<AbortRequest>) -> Result<Response<AbortReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn report_stored(
        &self,
        _: Request<dupla::v1::ReportStoredRequest>,
    ) -> Result<Response<dupla::v1::ReportStoredReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn chunk_refs(
        &self,
        _: Request<dupla::v1::ChunkRefsRequest>,
    ) -> Result<Response<dupla::v1::ChunkRefsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn report_corrupt(
        &self,
        _: Request<dupla::v1::ReportCorruptRequest>,
    ) -> Result<Response<dupla::v1::ReportCorruptReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn lookup(&self, request: Request<LookupRequest>) -> Result<Response<FileEntry>, Status> {
        let name = request.into_inner().name;
        let state = self.state.lock().unwrap();
        match state.files.get(&name) {
            Some((entry, _)) => Ok(Response::new(entry.clone())),
            None => Err(Status::not_found(format!("no file {name}"))),
        }
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let pattern = request.into_inner().pattern;
        let state = self.state.lock().unwrap();
        let files = state
            .files
            .values()
            .filter(|(e, _)| dupla::name::matches(&pattern, &e.name))
            .map(|(e, _)| e.clone())
            .collect();
        Ok(Response::new(ListReply { files }))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveReply>, Status> {
        let name = request.into_inner().name;
        let mut state = self.state.lock().unwrap();
        match state.files.remove(&name) {
            Some((entry, _)) => Ok(Response::new(RemoveReply {
                removed: Some(entry),
            })),
            None => Err(Status::not_found(format!("no file {name}"))),
        }
    }

    async fn set_quota(
        &self,
        _: Request<dupla::v1::SetQuotaRequest>,
    ) -> Result<Response<dupla::v1::QuotaReply>, Status> {
        Err(Status::unimplemented("the fake has no quotas"))
    }

    async fn launch_server(
        &self,
        _: Request<dupla::v1::LaunchServerRequest>,
    ) -> Result<Response<dupla::v1::ServerActionReply>, Status> {
        Err(Status::unimplemented("the fake has no launcher"))
    }

    async fn drain_server(
        &self,
        _: Request<dupla::v1::ServerActionRequest>,
    ) -> Result<Response<dupla::v1::ServerActionReply>, Status> {
        Err(Status::unimplemented("the fake has no launcher"))
    }

    async fn retire_server(
        &self,
        _: Request<dupla::v1::ServerActionRequest>,
    ) -> Result<Response<dupla::v1::ServerActionReply>, Status> {
        Err(Status::unimplemented("the fake has no launcher"))
    }

    async fn get_quota(
        &self,
        _: Request<dupla::v1::GetQuotaRequest>,
    ) -> Result<Response<dupla::v1::QuotaReply>, Status> {
        Err(Status::unimplemented("the fake has no quotas"))
    }

    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let state = self.state.lock().unwrap();
        Ok(Response::new(ClusterStatusReply {
            servers: vec![ServerStatus {
                node: Some(Node {
                    id: "fake".into(),
                    addr: self.addr.clone(),
                }),
                state: dupla::v1::ServerState::Up.into(),
                capacity: 1 << 30,
                peak_rss: 1234,
                ..Default::default()
            }],
            files: state.files.len() as u64,
            bytes: state.files.values().map(|(e, _)| e.size).sum(),
            under_replicated: 0,
            ..Default::default()
        }))
    }
}

/// Start the fake on a free port; it runs until the test's runtime ends.
async fn start() -> (Fake, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Fake {
        addr: addr.clone(),
        state: Arc::default(),
    };
    let router = tonic::transport::Server::builder()
        .add_service(
            storage_server::StorageServer::new(fake.clone())
                .max_decoding_message_size(dupla::rpc::MAX_MESSAGE_BYTES),
        )
        .add_service(manager_server::ManagerServer::new(fake.clone()))
        .add_service(GreeterServer::new(dupla::greeter::GreeterService))
        .add_service(ClockServer::new(dupla::clock::ClockService));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(router.serve_with_incoming(incoming));
    (fake, Client::new(addr, None))
}

fn write(root: &Path, name: &str, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &data).unwrap();
    data
}

async fn timed<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn backup_list_restore_remove_round_trip() {
    timed(async {
        let (_fake, client) = start().await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let big = write(root, "docs/big.bin", 2 * CHUNK_SIZE + 12345);
        write(root, "empty.txt", 0);

        let report = client
            .backup(root, Path::new("docs/big.bin"), false)
            .await
            .unwrap();
        assert_eq!(report.name, "docs/big.bin");
        assert_eq!(report.size, big.len() as u64);
        assert_eq!(report.blake3, Hash::of(&big).to_hex());
        assert_eq!(report.replica, "127.0.0.1:9");
        assert_eq!(report.copies, 2);
        assert_eq!(report.sent_bytes, big.len() as u64);
        let empty = client
            .backup(root, Path::new("empty.txt"), false)
            .await
            .unwrap();
        assert_eq!(empty.blake3, Hash::of(b"").to_hex());

        let names: Vec<String> = client
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["docs/big.bin", "empty.txt"]);
        assert_eq!(client.list("*.bin").await.unwrap().len(), 1);
        assert_eq!(client.status().await.unwrap().files, 2);

        let out = dir.path().join("out/restored.bin");
        let restored = client.restore("docs/big.bin", &out, false).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), big);
        assert_eq!(restored.blake3, report.blake3);
        assert_eq!(restored.path, out.display().to_string());
        let out_empty = dir.path().join("out/empty");
        client
            .restore("empty.txt", &out_empty, false)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out_empty).unwrap(), b"");

        let removed = client.remove("empty.txt").await.unwrap();
        assert_eq!(removed.name, "empty.txt");
        let err = client.remove("empty.txt").await.unwrap_err();
        assert_eq!(err.to_string(), "empty.txt: not found in your backups");
        let err = client
            .restore("empty.txt", &out_empty.with_extension("x"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, dupla::Error::NotFound(_)), "{err}");
        assert!(!out_empty.with_extension("x").exists());
    })
    .await
}

#[tokio::test]
async fn tampered_download_leaves_nothing_behind() {
    timed(async {
        let (fake, client) = start().await;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "f.bin", CHUNK_SIZE + 1);
        client
            .backup(dir.path(), Path::new("f.bin"), false)
            .await
            .unwrap();
        fake.state.lock().unwrap().tamper = true;
        let dest = dir.path().join("restore/f.bin");
        let err = client.restore("f.bin", &dest, false).await.unwrap_err();
        assert!(matches!(err, dupla::Error::Corrupt(_)), "{err}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("restore"))
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    })
    .await
}

#[tokio::test]
async fn refused_files_send_nothing() {
    timed(async {
        let (fake, client) = start().await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(&root, "ok.txt", 3);
        write(dir.path(), "outside.txt", 3);
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("link")).unwrap();
        for bad in ["../outside.txt", "link", ".", "missing"] {
            let err = client
                .backup(&root, Path::new(bad), false)
                .await
                .unwrap_err();
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        assert_eq!(fake.state.lock().unwrap().uploads, 0);
    })
    .await
}

#[tokio::test]
async fn bench_uploads_downloads_and_cleans_up() {
    timed(async {
        let (fake, client) = start().await;
        let args = BenchArgs {
            target: None,
            size: 3_000_000,
            count: 3,
            concurrency: 2,
            download: true,
        };
        let report = client.bench(&args, false).await.unwrap();
        assert_eq!(report.upload.files, 3);
        assert_eq!(report.upload.bytes, 9_000_000);
        assert_eq!(report.download.as_ref().unwrap().files, 3);
        assert_eq!(report.removed, 3);
        assert_eq!(report.servers[0].peak_rss, 1234);
        let state = fake.state.lock().unwrap();
        assert_eq!(state.uploads, 3);
        assert!(state.files.is_empty());
    })
    .await
}

#[tokio::test]
async fn hello_and_time_talk_to_the_node() {
    timed(async {
        let (_fake, client) = start().await;
        let names = vec!["Ana".to_string(), "Luis".to_string()];
        assert_eq!(
            client.hello(&names).await.unwrap(),
            ["Hola Ana", "Hola Luis"]
        );
        let time = client.time(4).await.unwrap();
        assert!(time.offset_ms.abs() < 1000.0, "{time:?}");
        assert!(time.rtt_ms >= 0.0);
    })
    .await
}

#[tokio::test]
async fn unreachable_manager_is_a_one_line_unavailable() {
    timed(async {
        let client = Client::new("127.0.0.1:1".into(), None);
        let err = client.status().await.unwrap_err();
        assert!(matches!(err, dupla::Error::Unavailable(_)));
        // Nothing listens there: no word about TLS, which is not the cause.
        assert_eq!(
            err.to_string(),
            "cannot reach manager 127.0.0.1:1 (is it running?)"
        );
    })
    .await
}
