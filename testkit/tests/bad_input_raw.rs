//! Bad input through raw gRPC calls, below what the generated clients
//! allow: messages over the size limit, bytes that are not protobuf (or not
//! even gRPC framing), absurd declared sizes, a stream that never ends, a
//! second user replaying the first user's chunk hashes, and internal calls
//! with made-up ids. Every case must get a clear status, leave the catalog
//! as it was, and leave the cluster able to take a valid upload and restore.

use bytes::{Buf, BufMut, Bytes};
use dupla::chunk::{self, CHUNK_SIZE, MAX_CHUNK_SIZE};
use dupla::rpc::{MAX_CATALOG_MESSAGE_BYTES, MAX_MESSAGE_BYTES, SECRET_METADATA};
use dupla::v1::storage_client::StorageClient;
use dupla::v1::{
    download_response, upload_request, AbortRequest, CommitRequest, DownloadRequest, FileEntry,
    HasChunksRequest, LookupRequest, RemoveRequest, ReplicateRequest, UploadBegin, UploadEnd,
    UploadRequest, UploadStatusRequest,
};
use dupla::Hash;
use dupla_testkit::chat::authed;
use dupla_testkit::cluster::TEST_SECRET;
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{bounded, test_bytes, TestCluster};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

// ---------------------------------------------------------------- helpers

/// Files in the whole catalog (every user).
async fn files(cluster: &TestCluster) -> u64 {
    cluster.status().await.files
}

/// `result` failed with `code` and a message containing `word`.
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    word: &str,
    what: &str,
) -> Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(
        status.message().contains(word),
        "{what}: the message should say {word:?}: {status:?}"
    );
    eprintln!("{what}: {:?} {:?}", status.code(), status.message());
    status
}

/// `name` is not in `token`'s catalog.
async fn assert_not_listed(cluster: &TestCluster, token: &str, name: &str) {
    let err = cluster
        .manager_client()
        .await
        .lookup(authed(
            token,
            LookupRequest {
                name: name.into(),
                version: 0,
            },
        ))
        .await
        .expect_err("the name must not be in the catalog");
    assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
}

/// Names and versions in `token`'s listing, sorted.
async fn listing(cluster: &TestCluster, token: &str) -> Vec<(String, u64)> {
    cluster
        .files_of(token)
        .await
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect()
}

/// A valid upload and restore of `name` still work through every server.
async fn still_works(cluster: &TestCluster, name: &str, seed: u64) {
    let data = test_bytes(2 * CHUNK_SIZE + 17, seed);
    let receipt = raw::upload(&cluster.at(0), name, &data)
        .await
        .unwrap_or_else(|e| panic!("a valid upload of {name} after bad input: {e:?}"));
    assert_eq!(receipt.copies, 2, "{receipt:?}");
    for i in 0..cluster.servers.len() {
        raw::assert_restores(&cluster.at(i), name, &data).await;
    }
}

/// A Storage client with no limit on what it sends (the server's limit is
/// what is under test) and the catalog-sized limit on what it accepts.
async fn unlimited_storage(target: &Target) -> StorageClient<Channel> {
    StorageClient::new(
        dupla::rpc::connect(&target.addr)
            .await
            .expect("server reachable"),
    )
    .max_decoding_message_size(MAX_CATALOG_MESSAGE_BYTES)
    .max_encoding_message_size(usize::MAX)
}

fn begin(name: &str, size: u64) -> UploadRequest {
    UploadRequest {
        msg: Some(upload_request::Msg::Begin(UploadBegin {
            name: name.into(),
            size,
            resume_chunks: Vec::new(),
            resume: false,
            held_chunks: Vec::new(),
        })),
    }
}

fn chunk_msg(index: u64, data: Vec<u8>) -> UploadRequest {
    UploadRequest {
        msg: Some(upload_request::Msg::Chunk(chunk::make(
            index,
            Bytes::from(data),
        ))),
    }
}

fn end(blake3: Hash) -> UploadRequest {
    UploadRequest {
        msg: Some(upload_request::Msg::End(UploadEnd {
            blake3: blake3.to_bytes(),
        })),
    }
}

/// The chunk hashes of `data`.
fn chunk_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks(CHUNK_SIZE).map(Hash::of).collect()
}

/// An upload of `size` bytes named `name` that sends no chunk at all:
/// every chunk is claimed as already held (`resume_chunks`), and the whole
/// file's blake3 is the caller's word.
fn resume_everything(name: &str, size: u64, hashes: &[Hash], whole: Hash) -> Vec<UploadRequest> {
    vec![
        UploadRequest {
            msg: Some(upload_request::Msg::Begin(UploadBegin {
                name: name.into(),
                size,
                resume_chunks: hashes.iter().map(Hash::to_bytes).collect(),
                resume: true,
                held_chunks: Vec::new(),
            })),
        },
        end(whole),
    ]
}

/// Like `raw::download`, but every mismatch is an error, not a panic: the
/// whole-file check is what some cases here are about.
async fn try_download(target: &Target, name: &str) -> Result<Vec<u8>, String> {
    let mut stream = raw::storage(target)
        .await
        .download(target.request(DownloadRequest {
            name: name.into(),
            offset: 0,
            version: 0,
        }))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let header = match stream.message().await {
        Ok(Some(dupla::v1::DownloadResponse {
            msg: Some(download_response::Msg::Header(h)),
        })) => h,
        other => return Err(format!("expected a header, got {other:?}")),
    };
    let mut data = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(dupla::v1::DownloadResponse {
                msg: Some(download_response::Msg::Chunk(c)),
            })) => {
                chunk::verify(&c).map_err(|e| e.to_string())?;
                data.extend_from_slice(&c.data);
            }
            Ok(None) => break,
            other => return Err(format!("expected a chunk, got {other:?}")),
        }
    }
    if data.len() as u64 != header.size {
        return Err(format!("{} of {} bytes", data.len(), header.size));
    }
    if Hash::of(&data).to_bytes() != header.blake3 {
        return Err(format!(
            "whole-file blake3 mismatch: the bytes hash to {}, the catalog says {}",
            Hash::of(&data),
            Hash::from_slice(&header.blake3, "blake3").map_err(|e| e.to_string())?
        ));
    }
    Ok(data)
}

/// `message` carrying the cluster secret (an internal call).
fn with_secret<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SECRET_METADATA, TEST_SECRET.parse().unwrap());
    request
}

/// Chunk files staged in server `i`'s `tmp/` whose name starts with `hex`.
fn staged(cluster: &TestCluster, i: usize, hex: &str) -> usize {
    std::fs::read_dir(cluster.servers[i].data.join("tmp"))
        .map(|dir| {
            dir.flatten()
                .filter(|f| f.file_name().to_string_lossy().starts_with(hex))
                .count()
        })
        .unwrap_or(0)
}

/// Durable chunks over every server.
fn durable_chunks(cluster: &TestCluster) -> usize {
    cluster
        .servers
        .iter()
        .map(|s| dupla_testkit::stored_chunks(&s.data))
        .sum()
}

/// Poll `done` every 20 ms for up to 30 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy to a node, whose connections can all be cut at once (as a
/// crashed client's would be).
struct Proxy {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn to(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = target.to_string();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, task }
    }

    /// Close every connection through the proxy, both ways.
    fn cut(self) {
        self.task.abort();
    }
}

// ------------------------------------------ a codec that sends raw bytes

/// A gRPC codec whose messages are raw bytes: whatever is given is sent as
/// the message body (framed by gRPC as usual), and replies come back
/// undecoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Call `path` on `addr` with `messages` as the (client-streamed) request
/// bodies, as the user holding `token`; returns the undecoded reply.
async fn raw_call(
    addr: &str,
    path: &'static str,
    token: Option<&str>,
    messages: Vec<Bytes>,
) -> Result<Bytes, Status> {
    let channel = dupla::rpc::connect(addr).await.expect("node reachable");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut request = Request::new(tokio_stream::iter(messages));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    grpc.client_streaming(
        request,
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// POST `body` as is (no gRPC framing added) to `path` on `addr` over
/// HTTP/2 with gRPC headers; returns the grpc-status the node answered
/// (from the headers or the trailers).
async fn raw_http2(addr: &str, path: &str, token: Option<&str>, body: &str) -> Status {
    use tonic::codegen::{Body as _, Service as _};
    let mut channel = dupla::rpc::connect(addr).await.expect("node reachable");
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("channel ready");
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder
        .body(tonic::body::Body::new(body.to_string()))
        .unwrap();
    let response = channel.call(request).await.expect("an HTTP/2 response");
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return status;
    }
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    return Status::from_header_map(trailers)
                        .unwrap_or_else(|| Status::unknown("trailers without grpc-status"));
                }
            }
            Some(Err(e)) => return Status::unknown(format!("body error: {e}")),
            None => return Status::unknown("no grpc-status at all"),
        }
    }
}

// ------------------------------------------------------------------ tests

/// (a) A message over the server's limit, and a chunk one byte too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_and_chunks_are_refused() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let keep = test_bytes(CHUNK_SIZE + 5, 1);
        raw::upload(&cluster.at(1), "keep.bin", &keep)
            .await
            .unwrap();
        let before = files(&cluster).await;
        let durable = durable_chunks(&cluster);

        // A chunk message past MAX_MESSAGE_BYTES (2 MiB + 64 KiB): the
        // server's decoder refuses it from its length prefix.
        for over in [MAX_MESSAGE_BYTES + 1, 4 * MAX_MESSAGE_BYTES] {
            let messages = vec![
                begin("huge-message.bin", 8 * CHUNK_SIZE as u64),
                chunk_msg(0, test_bytes(over, 2)),
                end(Hash::of(b"whatever")),
            ];
            let result = unlimited_storage(&cluster.at(0))
                .await
                .upload(cluster.at(0).request(tokio_stream::iter(messages)))
                .await;
            // tonic says OUT_OF_RANGE; the entry maps it through
            // `Error::from_status` to InvalidInput, so the client sees
            // INVALID_ARGUMENT with tonic's text.
            assert_status(
                result,
                Code::InvalidArgument,
                "too large",
                &format!("a {over}-byte chunk message"),
            );
        }
        // An UploadBegin past the limit (70,000 resume hashes, ~2.4 MB):
        // refused before anything is placed.
        let too_many = UploadRequest {
            msg: Some(upload_request::Msg::Begin(UploadBegin {
                name: "huge-begin.bin".into(),
                size: 70_000 * CHUNK_SIZE as u64,
                resume_chunks: vec![Hash::of(b"x").to_bytes(); 70_000],
                resume: true,
                held_chunks: Vec::new(),
            })),
        };
        let result = unlimited_storage(&cluster.at(0))
            .await
            .upload(cluster.at(0).request(tokio_stream::iter(vec![too_many])))
            .await;
        assert_status(
            result,
            Code::InvalidArgument,
            "too large",
            "a 2.4 MB UploadBegin",
        );
        // The same size of message on a unary call is refused by tonic
        // before the handler runs: OUT_OF_RANGE, as docs/protocol.md says.
        let result = unlimited_storage(&cluster.at(0))
            .await
            .upload_status(cluster.at(0).request(UploadStatusRequest {
                name: "huge-status.bin".into(),
                size: 70_000 * CHUNK_SIZE as u64,
                chunks: vec![Hash::of(b"x").to_bytes(); 70_000],
                chunk_lengths: Vec::new(),
            }))
            .await;
        assert_status(
            result,
            Code::OutOfRange,
            "too large",
            "a 2.4 MB UploadStatus",
        );
        // Inside the limit but over the resume bound (30,000 hashes).
        let over_bound = UploadRequest {
            msg: Some(upload_request::Msg::Begin(UploadBegin {
                name: "many-hashes.bin".into(),
                size: 30_001 * CHUNK_SIZE as u64,
                resume_chunks: vec![Hash::of(b"x").to_bytes(); 30_001],
                resume: true,
                held_chunks: Vec::new(),
            })),
        };
        let result = raw::upload_raw(&cluster.at(0), vec![over_bound]).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "at most 30000",
            "30,001 resume hashes",
        );

        // A chunk of MAX_CHUNK_SIZE + 1 bytes: the message fits, the chunk
        // does not.
        let data = test_bytes(2 * MAX_CHUNK_SIZE, 3);
        let mut long = data[..MAX_CHUNK_SIZE].to_vec();
        long.push(0);
        let messages = vec![
            begin("one-byte-over.bin", data.len() as u64),
            chunk_msg(0, long),
            chunk_msg(1, data[MAX_CHUNK_SIZE..].to_vec()),
            end(Hash::of(&data)),
        ];
        let result = raw::upload_raw(&cluster.at(0), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "has 2097153 bytes; chunks are 1 to 2097152 bytes",
            "a chunk of MAX_CHUNK_SIZE + 1 bytes",
        );
        // The last chunk one byte longer than the declared size allows.
        let messages = vec![
            begin("last-too-long.bin", CHUNK_SIZE as u64 + 10),
            chunk_msg(0, data[..CHUNK_SIZE].to_vec()),
            chunk_msg(1, data[CHUNK_SIZE..CHUNK_SIZE + 11].to_vec()),
            end(Hash::of(&data[..CHUNK_SIZE + 11])),
        ];
        let result = raw::upload_raw(&cluster.at(2), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "beyond the declared size",
            "a last chunk past the declared size",
        );

        assert_eq!(files(&cluster).await, before, "nothing was committed");
        for name in [
            "huge-message.bin",
            "huge-begin.bin",
            "many-hashes.bin",
            "one-byte-over.bin",
            "last-too-long.bin",
        ] {
            assert_not_listed(&cluster, &cluster.token, name).await;
        }
        // Nothing became durable either (the refused chunks never reached
        // a batch commit).
        assert_eq!(durable_chunks(&cluster), durable);
        raw::assert_restores(&cluster.at(0), "keep.bin", &keep).await;
        still_works(&cluster, "one-byte-over.bin", 4).await;
    })
    .await;
}

/// (b) Bytes that are not protobuf, and bodies that are not gRPC framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_that_are_not_protobuf_are_refused_and_the_nodes_stay_up() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        raw::upload(&cluster.at(0), "keep.bin", b"kept")
            .await
            .unwrap();
        let before = files(&cluster).await;
        let server = cluster.server_addr(0);
        let manager = cluster.manager_addr();
        let token = cluster.token.clone();

        // Eleven 0xff bytes: a varint that never ends. Certainly invalid.
        let bad_varint = Bytes::from(vec![0xffu8; 11]);
        // A field with wire type 7, which does not exist.
        let bad_wire_type = Bytes::from_static(&[0x0f, 0x01, 0x02, 0x03]);
        // A length-delimited field (1, the oneof's UploadBegin) whose length
        // runs past the end.
        let truncated = Bytes::from_static(&[0x0a, 0x7f, 0x01]);
        for (what, body) in [
            ("an endless varint", bad_varint),
            ("wire type 7", bad_wire_type),
            ("a field longer than the message", truncated),
        ] {
            let result = raw_call(
                &server,
                "/dupla.v1.Storage/Upload",
                Some(&token),
                vec![body.clone()],
            )
            .await;
            assert_status(
                result,
                Code::Internal,
                "failed to decode",
                &format!("Upload with {what}"),
            );
            let result =
                raw_call(&manager, "/dupla.v1.Manager/List", Some(&token), vec![body]).await;
            assert_status(
                result,
                Code::Internal,
                "failed to decode",
                &format!("List with {what}"),
            );
        }
        // Pseudo-random bytes: some decode as unknown fields, most do not;
        // every one must be an error (never a receipt) on Upload.
        for seed in 0..16 {
            let body = Bytes::from(test_bytes(64 + seed as usize * 97, 100 + seed));
            let status = raw_call(
                &server,
                "/dupla.v1.Storage/Upload",
                Some(&token),
                vec![body],
            )
            .await
            .expect_err("random bytes made an upload");
            assert!(
                matches!(status.code(), Code::Internal | Code::InvalidArgument),
                "seed {seed}: {status:?}"
            );
        }
        // An empty message is a valid protobuf (every field default): an
        // UploadRequest without a message in its oneof.
        let result = raw_call(
            &server,
            "/dupla.v1.Storage/Upload",
            Some(&token),
            vec![Bytes::new()],
        )
        .await;
        assert_status(
            result,
            Code::InvalidArgument,
            "starts with UploadBegin",
            "an empty Upload message",
        );
        // Without a token the server refuses before reading a byte.
        let result = raw_call(
            &server,
            "/dupla.v1.Storage/Upload",
            None,
            vec![Bytes::from(vec![0xffu8; 11])],
        )
        .await;
        assert_status(
            result,
            Code::Unauthenticated,
            "not logged in",
            "garbage without a token",
        );

        // Below protobuf: bodies that are not gRPC framing.
        // The compressed flag without a grpc-encoding header.
        let status = raw_http2(
            &server,
            "/dupla.v1.Storage/Upload",
            Some(&token),
            "\u{1}\0\0\0\u{3}abc",
        )
        .await;
        eprintln!("compressed flag without encoding: {status:?}");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("compress"), "{status:?}");
        // A length prefix promising 16 bytes, then 3 and the end.
        let status = raw_http2(
            &manager,
            "/dupla.v1.Manager/List",
            Some(&token),
            "\0\0\0\0\u{10}abc",
        )
        .await;
        eprintln!("truncated frame: {status:?}");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        // Two bytes: not even a frame header.
        let status = raw_http2(&server, "/dupla.v1.Storage/Upload", Some(&token), "\0\0").await;
        eprintln!("a partial frame header: {status:?}");
        assert_ne!(status.code(), Code::Ok, "{status:?}");
        // A method that does not exist.
        let result = raw_call(&server, "/dupla.v1.Storage/Nope", Some(&token), vec![]).await;
        assert_status(result, Code::Unimplemented, "", "an unknown method");

        // The nodes are still up and serve valid calls.
        assert_eq!(files(&cluster).await, before, "nothing was committed");
        let reply = raw_call(
            &manager,
            "/dupla.v1.Manager/List",
            Some(&token),
            vec![Bytes::new()],
        )
        .await
        .expect("a valid List through the raw codec");
        assert!(
            reply.windows(8).any(|w| w == b"keep.bin"),
            "the listing carries keep.bin: {reply:?}"
        );
        raw::assert_restores(&cluster.at(1), "keep.bin", b"kept").await;
        still_works(&cluster, "after-garbage.bin", 5).await;
    })
    .await;
}

/// (c) Declared sizes no server could hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_declared_sizes_are_refused_before_anything_is_stored() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let before = files(&cluster).await;
        // One byte over the servers' configured capacity. (What a server
        // reports can be less, as its disk fills, and moves with the disk's
        // free space, which other tests change meanwhile.)
        let configured = dupla_server::Config::for_test("x".into(), String::new(), "s").capacity;
        let reported = cluster.status().await.servers[0].capacity;
        assert!(reported <= configured, "{reported} > {configured}");
        for size in [u64::MAX, 1 << 60, configured + 1] {
            let messages = vec![
                begin("enormous.bin", size),
                chunk_msg(0, test_bytes(CHUNK_SIZE, 6)),
                end(Hash::of(b"never")),
            ];
            let result = raw::upload_raw(&cluster.at(0), messages).await;
            // RESOURCE_EXHAUSTED, not UNAVAILABLE: waiting would not help,
            // so the client does not retry.
            assert_status(
                result,
                Code::ResourceExhausted,
                "no live storage server has room",
                &format!("declared size {size}"),
            );
        }
        // UploadStatus for an absurd size: the hash count cannot match.
        let result = raw::storage(&cluster.at(0))
            .await
            .upload_status(cluster.at(0).request(UploadStatusRequest {
                name: "enormous.bin".into(),
                size: u64::MAX,
                chunks: vec![],
                chunk_lengths: Vec::new(),
            }))
            .await;
        assert_status(
            result,
            // No chunks: a placement preview, and nothing has room for it.
            Code::ResourceExhausted,
            "room",
            "UploadStatus of u64::MAX bytes",
        );
        assert_eq!(files(&cluster).await, before);
        assert_not_listed(&cluster, &cluster.token, "enormous.bin").await;
        assert_eq!(durable_chunks(&cluster), 0);
        for i in 0..3 {
            assert_eq!(
                staged(&cluster, i, ""),
                0,
                "server {i} staged something for a refused upload"
            );
        }
        // No upload of the name was left open: it uploads at once.
        still_works(&cluster, "enormous.bin", 7).await;
    })
    .await;
}

/// An upload of `data` as `name` through a proxy to server 0 that sends
/// its start and first chunk, then nothing, with its sending half left
/// open. Returns once the chunk is staged on a holder and the stream has
/// stayed open a while, having checked that nothing is committed and the
/// name is held.
async fn a_silent_upload_through_a_proxy(cluster: &TestCluster, name: &str, data: &[u8]) -> Silent {
    let before = files(cluster).await;
    let durable = durable_chunks(cluster);
    let first = Hash::of(&data[..CHUNK_SIZE]).to_hex();
    let (tx, rx) = mpsc::channel::<UploadRequest>(4);
    let mut messages = raw::upload_messages(name, data).into_iter();
    tx.send(messages.next().unwrap()).await.unwrap();
    tx.send(messages.next().unwrap()).await.unwrap();
    // Through a proxy, so the client's connection can be cut the way a
    // crashed client's is. (Dropping the call in-process is not that: the
    // HTTP/2 stream stays open as long as its body's sender lives.)
    let proxy = Proxy::to(&cluster.server_addr(0)).await;
    let target = Target::new(proxy.addr.clone(), &cluster.token);
    let mut client = raw::storage(&target).await;
    let call =
        tokio::spawn(async move { client.upload(target.request(ReceiverStream::new(rx))).await });
    wait_until("the first chunk to be staged", || {
        (0..cluster.servers.len()).any(|i| staged(cluster, i, &first) > 0)
    })
    .await;
    // Open for a while: nothing committed, nothing durable, the name held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished(), "the server ended an open stream early");
    assert_eq!(files(cluster).await, before);
    assert_not_listed(cluster, &cluster.token, name).await;
    assert_eq!(durable_chunks(cluster), durable);
    let result = raw::upload(&cluster.at(1), name, b"other").await;
    assert_status(
        result,
        Code::AlreadyExists,
        "another upload",
        "a second upload of the held name",
    );
    Silent {
        tx,
        call,
        proxy,
        first,
    }
}

/// A silent upload in progress.
struct Silent {
    /// Its sending half, never closed.
    tx: mpsc::Sender<UploadRequest>,
    call: tokio::task::JoinHandle<Result<tonic::Response<dupla::v1::UploadReceipt>, Status>>,
    proxy: Proxy,
    /// Hex hash of its first chunk (the staged file's name starts with it).
    first: String,
}

impl Silent {
    /// The client vanishes: its TCP connection closes mid-stream, while the
    /// sending half of its call was never closed. Waits until the servers
    /// have let go of it (no transfer running, the staged chunk removed).
    async fn cut(self, cluster: &TestCluster) {
        self.proxy.cut();
        let seen = self
            .call
            .await
            .unwrap()
            .expect_err("a cut call cannot succeed");
        eprintln!("the cut client saw {:?}", seen.code());
        let n = cluster.servers.len();
        wait_until("the abandoned staged chunk to be removed", || {
            (0..n).all(|i| staged(cluster, i, &self.first) == 0)
        })
        .await;
        cluster
            .wait_for_status(|s| s.servers.iter().all(|s| s.active_transfers == 0))
            .await;
        drop(self.tx);
    }
}

/// (d) A stream that sends its start and one chunk, then nothing.
///
/// The server gives up on a silent sender after its idle timeout (60 s by
/// default; `bad_input.rs` runs that path with 1 s). This one checks the
/// other way out: that nothing is committed while it is open, that the
/// servers drop it when its client's connection dies, and that the
/// client's next run (a resume: it takes the name over, as `dupla backup`
/// does after a failure) can write the name at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_never_finishes_commits_nothing_and_its_name_can_be_taken_over() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let before = files(&cluster).await;
        let data = test_bytes(3 * CHUNK_SIZE, 8);
        let silent = a_silent_upload_through_a_proxy(&cluster, "forever.bin", &data).await;
        silent.cut(&cluster).await;
        assert_eq!(files(&cluster).await, before);
        // A plain upload of the name right after the cut: the entry's Abort
        // may not have reached the manager yet, so either answer is
        // possible here (the next test waits for it).
        let plain = raw::upload(&cluster.at(1), "forever.bin", b"plain").await;
        eprintln!(
            "a plain upload right after the cut: {:?}",
            plain.as_ref().map(|r| r.copies).map_err(|e| e.code())
        );
        // The client's rerun resumes, taking the name over.
        let replacement = test_bytes(2 * CHUNK_SIZE + 3, 9);
        let mut messages = raw::upload_messages("forever.bin", &replacement);
        if let Some(upload_request::Msg::Begin(b)) = messages[0].msg.as_mut() {
            b.resume = true;
        }
        let receipt = raw::upload_raw(&cluster.at(2), messages)
            .await
            .expect("a resume takes over the abandoned upload");
        assert_eq!(receipt.copies, 2);
        assert_eq!(files(&cluster).await, before + 1);
        for i in 0..3 {
            raw::assert_restores(&cluster.at(i), "forever.bin", &replacement).await;
        }
    })
    .await;
}

/// (d, strict) Once the servers have dropped an upload whose client's
/// connection died, the name is free for anyone's next upload, not only a
/// takeover: the entry sends its Abort from a task of its own, which the
/// handler's cancellation (its client is gone) does not take with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_client_frees_its_name_for_a_plain_upload() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let data = test_bytes(3 * CHUNK_SIZE, 8);
        let silent = a_silent_upload_through_a_proxy(&cluster, "freed.bin", &data).await;
        silent.cut(&cluster).await;
        let replacement = test_bytes(CHUNK_SIZE + 3, 9);
        let cut = Instant::now();
        loop {
            match raw::upload(&cluster.at(1), "freed.bin", &replacement).await {
                Ok(_) => break,
                Err(e) if e.code() == Code::AlreadyExists => {
                    assert!(
                        cut.elapsed() < Duration::from_secs(10),
                        "the dead client's upload still holds the name 10 s after its servers dropped it: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the upload after the cut failed: {e:?}"),
            }
        }
        raw::assert_restores(&cluster.at(2), "freed.bin", &replacement).await;
    })
    .await;
}

/// (e) User B replays user A's chunk hashes: through UploadStatus, through
/// a resumed upload claiming every chunk, and against a name A holds open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_chunk_hashes_never_reach_the_owners_files() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let alice = cluster.new_user("alice").await;
        let bob = cluster.new_user("bob").await;
        let as_alice = |i: usize| Target::new(cluster.server_addr(i), &alice);
        let as_bob = |i: usize| Target::new(cluster.server_addr(i), &bob);
        let name = "photos/holiday.raw";
        let data = test_bytes(5 * CHUNK_SIZE + 123, 10);
        let hashes = chunk_hashes(&data);
        let whole = Hash::of(&data);
        raw::upload(&as_alice(0), name, &data).await.unwrap();
        let alices = listing(&cluster, &alice).await;
        assert_eq!(alices, [(name.to_string(), 1)]);

        // B cannot restore, look up, list or remove A's file.
        for i in 0..3 {
            let err = try_download(&as_bob(i), name).await.unwrap_err();
            assert!(err.contains("NotFound"), "{err}");
        }
        assert_not_listed(&cluster, &bob, name).await;
        assert!(listing(&cluster, &bob).await.is_empty());
        let result = cluster
            .manager_client()
            .await
            .remove(authed(&bob, RemoveRequest { name: name.into() }))
            .await;
        assert_status(
            result,
            Code::NotFound,
            "not found in your backups",
            "B removes A's file",
        );

        // B asks what the cluster holds of A's chunks, under A's name.
        let status = raw::storage(&as_bob(1))
            .await
            .upload_status(as_bob(1).request(UploadStatusRequest {
                name: name.into(),
                size: data.len() as u64,
                chunks: hashes.iter().map(Hash::to_bytes).collect(),
                chunk_lengths: Vec::new(),
            }))
            .await
            .expect("UploadStatus answers any user")
            .into_inner();
        // A chunk hash is not proof of holding the bytes: none of A's
        // chunks count as held for B.
        assert_eq!(status.held_chunks, 0, "B may claim none of A's chunks");

        // B resumes an upload of the same name claiming every chunk: refused,
        // so B would have to send the bytes (and then has his own copy).
        let result = raw::upload_raw(
            &as_bob(2),
            resume_everything(name, data.len() as u64, &hashes, whole),
        )
        .await;
        assert_status(
            result,
            Code::FailedPrecondition,
            "files you do not own",
            "B claims A's chunks in a resume",
        );
        assert!(listing(&cluster, &bob).await.is_empty());

        // The same with a whole-file hash that lies: refused just the same.
        let lie = Hash::of(b"not the file");
        let result = raw::upload_raw(
            &as_bob(0),
            resume_everything("lie.raw", data.len() as u64, &hashes, lie),
        )
        .await;
        assert_status(
            result,
            Code::FailedPrecondition,
            "files you do not own",
            "B claims A's chunks under another name",
        );

        // A holds an upload of a new name open; B's takeover resume of the
        // same name is B's own and does not take A's over.
        let held = "notes/open.txt";
        let open_data = test_bytes(2 * CHUNK_SIZE + 9, 11);
        let first = Hash::of(&open_data[..CHUNK_SIZE]).to_hex();
        let (tx, rx) = mpsc::channel::<UploadRequest>(4);
        let mut messages = raw::upload_messages(held, &open_data).into_iter();
        tx.send(messages.next().unwrap()).await.unwrap();
        tx.send(messages.next().unwrap()).await.unwrap();
        let target = as_alice(1);
        let mut client = raw::storage(&target).await;
        let alices_call =
            tokio::spawn(
                async move { client.upload(target.request(ReceiverStream::new(rx))).await },
            );
        wait_until("A's first chunk to be staged", || {
            (0..3).any(|i| staged(&cluster, i, &first) > 0)
        })
        .await;
        let bobs_data = test_bytes(CHUNK_SIZE + 1, 12);
        let mut bobs = raw::upload_messages(held, &bobs_data);
        if let Some(upload_request::Msg::Begin(b)) = bobs[0].msg.as_mut() {
            b.resume = true;
        }
        raw::upload_raw(&as_bob(2), bobs)
            .await
            .expect("B's upload of a name A is writing is B's own file");
        for message in messages {
            tx.send(message).await.unwrap();
        }
        drop(tx);
        alices_call
            .await
            .unwrap()
            .expect("A's open upload was not taken over by B's resume");

        // A's files are A's, unchanged; B's are B's.
        assert_eq!(
            listing(&cluster, &alice).await,
            [(held.to_string(), 1), (name.to_string(), 1)]
        );
        for i in 0..3 {
            raw::assert_restores(&as_alice(i), name, &data).await;
            raw::assert_restores(&as_alice(i), held, &open_data).await;
        }
        raw::assert_restores(&as_bob(0), held, &bobs_data).await;
        // B removing his copies leaves A's chunks in place.
        let mut manager = cluster.manager_client().await;
        for gone in bob_names(&cluster, &bob).await {
            manager
                .remove(authed(&bob, RemoveRequest { name: gone }))
                .await
                .unwrap();
        }
        assert!(listing(&cluster, &bob).await.is_empty());
        for i in 0..3 {
            raw::assert_restores(&as_alice(i), name, &data).await;
        }
    })
    .await;
}

/// A resumed upload's whole-file blake3 (`UploadEnd`) is checked like a
/// fresh upload's: a client that declares a hash its chunks do not have
/// gets DATA_LOSS, and nothing is committed: the entry reads the resumed
/// part back from a holder to hash the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_upload_with_a_false_whole_file_hash_is_refused() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let data = test_bytes(3 * CHUNK_SIZE + 1, 16);
        raw::upload(&cluster.at(0), "original.bin", &data)
            .await
            .unwrap();
        let before = files(&cluster).await;
        let hashes = chunk_hashes(&data);
        // Two chunks resumed, the rest sent, the end hash false.
        let mut messages = raw::upload_messages("copy.bin", &data);
        messages[0] = UploadRequest {
            msg: Some(upload_request::Msg::Begin(UploadBegin {
                name: "copy.bin".into(),
                size: data.len() as u64,
                resume_chunks: hashes[..2].iter().map(Hash::to_bytes).collect(),
                resume: true,
                held_chunks: Vec::new(),
            })),
        };
        messages.drain(1..3);
        *messages.last_mut().unwrap() = end(Hash::of(b"not the file"));
        let result = raw::upload_raw(&cluster.at(1), messages).await;
        assert_status(
            result,
            Code::DataLoss,
            "the client declared",
            "a resume with a false end hash",
        );
        assert_eq!(files(&cluster).await, before);
        assert_not_listed(&cluster, &cluster.token, "copy.bin").await;
    })
    .await;
}

async fn bob_names(cluster: &TestCluster, token: &str) -> Vec<String> {
    listing(cluster, token)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// (f) Internal calls with made-up ids, and malformed fields the existing
/// bad-input tests do not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_calls_with_made_up_ids_and_malformed_fields_are_refused() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let keep = test_bytes(CHUNK_SIZE + 1, 13);
        raw::upload(&cluster.at(0), "keep.bin", &keep)
            .await
            .unwrap();
        let before = files(&cluster).await;
        let mut manager = cluster.manager_client().await;
        let entry = FileEntry {
            name: "made-up.bin".into(),
            size: 1,
            blake3: Hash::of(b"x").to_bytes(),
            chunks: vec![Hash::of(b"x").to_bytes()],
            chunk_size: CHUNK_SIZE as u32,
            holders: vec![dupla::v1::Node {
                id: cluster.servers[0].id.clone(),
                addr: cluster.server_addr(0),
            }],
            committed_unix_ms: 0,
            version: 0,
            chunk_lengths: Vec::new(),
            lost: false,
        };
        let commit = |upload_id: &str, entry: Option<FileEntry>| CommitRequest {
            upload_id: upload_id.into(),
            entry,
        };
        let result = manager
            .commit(with_secret(commit("0123456789abcdef", Some(entry.clone()))))
            .await;
        assert_status(
            result,
            Code::Aborted,
            "not open",
            "Commit of a made-up upload id",
        );
        let result = manager
            .commit(with_secret(commit("", Some(entry.clone()))))
            .await;
        assert_status(
            result,
            Code::Aborted,
            "not open",
            "Commit of an empty upload id",
        );
        let result = manager.commit(with_secret(commit("0123", None))).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "without a file entry",
            "Commit without an entry",
        );
        // Without the secret, even with a user's token.
        let result = manager
            .commit(authed(&cluster.token, commit("0123", Some(entry))))
            .await;
        assert_status(
            result,
            Code::PermissionDenied,
            "cluster secret",
            "Commit with a token but no secret",
        );
        // Abort of an id nobody opened is accepted and does nothing.
        manager
            .abort(with_secret(AbortRequest {
                upload_id: "made-up".into(),
                reason: "test".into(),
            }))
            .await
            .expect("Abort of an unknown id is a no-op");
        // The newer internal calls need the secret too.
        let mut storage = raw::storage(&cluster.at(0)).await;
        let result = storage
            .has_chunks(HasChunksRequest {
                hashes: vec![Hash::of(b"x").to_bytes()],
            })
            .await;
        assert_status(
            result,
            Code::PermissionDenied,
            "cluster secret",
            "HasChunks",
        );
        let result = storage
            .replicate(ReplicateRequest {
                name: "keep.bin".into(),
                chunks: vec![],
                size: 0,
                sources: vec![],
                ..Default::default()
            })
            .await;
        assert_status(
            result,
            Code::PermissionDenied,
            "cluster secret",
            "Replicate",
        );

        // Hash fields that are not 32 bytes.
        let data = test_bytes(CHUNK_SIZE + 8, 14);
        let mut messages = raw::upload_messages("short-hash.bin", &data);
        if let Some(upload_request::Msg::Chunk(c)) = messages[1].msg.as_mut() {
            c.hash = c.hash.slice(..31);
        }
        let result = raw::upload_raw(&cluster.at(0), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "chunk hash",
            "a 31-byte chunk hash",
        );
        let mut messages = raw::upload_messages("short-end.bin", &data);
        if let Some(upload_request::Msg::End(e)) = messages.last_mut().unwrap().msg.as_mut() {
            e.blake3 = Bytes::new();
        }
        let result = raw::upload_raw(&cluster.at(1), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "blake3",
            "an empty UploadEnd.blake3",
        );
        // Chunks out of order, and a second UploadBegin mid-stream.
        let mut messages = raw::upload_messages("swapped.bin", &data);
        messages.swap(1, 2);
        let result = raw::upload_raw(&cluster.at(0), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "arrived where chunk 0 was expected",
            "chunks out of order",
        );
        let mut messages = raw::upload_messages("two-begins.bin", &data);
        messages.insert(2, begin("two-begins.bin", data.len() as u64));
        let result = raw::upload_raw(&cluster.at(0), messages).await;
        assert_status(
            result,
            Code::InvalidArgument,
            "expected a chunk or UploadEnd",
            "a second UploadBegin",
        );

        assert_eq!(files(&cluster).await, before, "nothing was committed");
        for name in [
            "made-up.bin",
            "short-hash.bin",
            "short-end.bin",
            "swapped.bin",
            "two-begins.bin",
        ] {
            assert_not_listed(&cluster, &cluster.token, name).await;
        }
        raw::assert_restores(&cluster.at(1), "keep.bin", &keep).await;
        still_works(&cluster, "swapped.bin", 15).await;
    })
    .await;
}
