//! `dupla.v1.Storage`: adapts gRPC calls to the upload, pipeline, download
//! and fetch modules. Internal calls check the cluster secret here.

use crate::download::{self, DownloadStream};
use crate::fetch::{self, FetchStream};
use crate::node::StorageNode;
use crate::pipeline::{self, next_message, Plan, StoreSource, MAX_CHAIN, MAX_FALLBACKS};
use crate::{gc, replicate, resume, scrub, upload};
use dupla::chunk::MAX_CHUNK_SIZE;
use dupla::rpc::UserCredentials;
use dupla::v1::storage_server::Storage;
use dupla::v1::{
    store_request, CollectGarbageReport, CollectGarbageRequest, DownloadRequest,
    FetchChunksRequest, HasChunksReply, HasChunksRequest, ReplicateReply, ReplicateRequest,
    ScrubReport, ScrubRequest, StoreReceipt, StoreRequest, UploadReceipt, UploadRequest,
    UploadStatusReply, UploadStatusRequest,
};
use dupla::{name, Error};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The Storage service over the node's shared state.
#[derive(Clone)]
pub struct StorageService {
    node: Arc<StorageNode>,
}

impl StorageService {
    /// Serve `node`.
    pub fn new(node: Arc<StorageNode>) -> Self {
        StorageService { node }
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Storage for StorageService {
    async fn upload(&self, request: Request<Streaming<UploadRequest>>) -> Reply<UploadReceipt> {
        let user = UserCredentials::of(&request)?;
        let receipt =
            upload::handle(self.node.clone(), user, Box::pin(request.into_inner())).await?;
        Ok(Response::new(receipt))
    }

    type DownloadStream = DownloadStream;

    async fn download(&self, request: Request<DownloadRequest>) -> Reply<DownloadStream> {
        let user = UserCredentials::of(&request)?;
        let stream = download::open(self.node.clone(), user, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn store(&self, request: Request<Streaming<StoreRequest>>) -> Reply<StoreReceipt> {
        self.node.secret.check(&request)?;
        let _transfer = self.node.active.enter();
        let mut stream = request.into_inner();
        let begin = match next_message(&mut stream, self.node.idle_timeout).await? {
            Some(StoreRequest {
                msg: Some(store_request::Msg::Begin(begin)),
            }) => begin,
            _ => {
                return Err(
                    Error::InvalidInput("a Store stream starts with StoreBegin".into()).into(),
                )
            }
        };
        name::validate(&begin.name)?;
        if begin.chain.len() > MAX_CHAIN || begin.fallbacks.len() > MAX_FALLBACKS {
            return Err(Status::invalid_argument(format!(
                "a Store carries at most {MAX_CHAIN} chain nodes and {MAX_FALLBACKS} fallbacks"
            )));
        }
        let prefix = resume::parse_hashes(&begin.prefix, resume::MAX_RESUME_CHUNKS)?;
        if prefix.len() as u64 > begin.size {
            return Err(Status::invalid_argument(
                "the resumed prefix has more chunks than the file",
            ));
        }
        let mut prefix_lengths = Vec::with_capacity(prefix.len());
        if begin.store_locally {
            // The stream leaves the prefix out: this copy must have it
            // already, and its chunks' lengths are those on disk.
            for hash in &prefix {
                match self.node.store.claim_len(hash) {
                    Some(len) if len > 0 && len <= MAX_CHUNK_SIZE as u64 => {
                        prefix_lengths.push(len as u32)
                    }
                    _ => {
                        return Err(Error::Stale(format!(
                            "{}: chunk {hash} of the resumed part is not on this server",
                            begin.name
                        ))
                        .into())
                    }
                }
            }
        } else if !prefix.is_empty() {
            return Err(Status::invalid_argument(
                "only a storing node can be sent a resumed prefix",
            ));
        }
        let plan = Plan {
            upload_id: begin.upload_id,
            name: begin.name,
            size: begin.size,
            store_locally: begin.store_locally,
            chain: begin.chain,
            fallbacks: begin.fallbacks,
            prefix,
            prefix_lengths,
        };
        let holders = pipeline::run(
            &self.node,
            plan,
            &mut StoreSource(stream, self.node.idle_timeout),
        )
        .await?;
        Ok(Response::new(StoreReceipt { holders }))
    }

    async fn upload_status(
        &self,
        request: Request<UploadStatusRequest>,
    ) -> Reply<UploadStatusReply> {
        let user = UserCredentials::of(&request)?;
        let reply = resume::status(&self.node, &user, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn has_chunks(&self, request: Request<HasChunksRequest>) -> Reply<HasChunksReply> {
        self.node.secret.check(&request)?;
        let hashes = resume::parse_hashes(&request.into_inner().hashes, 65_536)?;
        Ok(Response::new(HasChunksReply {
            leading: resume::leading_here(&self.node, &hashes),
        }))
    }

    async fn collect_garbage(
        &self,
        request: Request<CollectGarbageRequest>,
    ) -> Reply<CollectGarbageReport> {
        self.node.secret.check(&request)?;
        let report = gc::pass(&self.node, self.node.gc_grace).await?;
        Ok(Response::new(report))
    }

    async fn replicate(&self, request: Request<ReplicateRequest>) -> Reply<ReplicateReply> {
        self.node.secret.check(&request)?;
        let reply = replicate::handle(self.node.clone(), request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn scrub(&self, request: Request<ScrubRequest>) -> Reply<ScrubReport> {
        // Unthrottled, so not for anyone who can reach the port: the
        // cluster itself or a logged-in user.
        let user = if self.node.secret.check(&request).is_err() {
            let user = UserCredentials::of(&request)?;
            let login = self.node.check_user(&user).await?;
            scrub::admit_user(&self.node, &login)?;
            tracing::info!(%login, "scrub pass asked for");
            Some(user)
        } else {
            None
        };
        // On demand: as fast as the disk allows (the background pass is
        // the throttled one).
        let report = scrub::pass(&self.node, u64::MAX).await?;
        Ok(Response::new(match user {
            Some(user) => scrub::for_user(&self.node, &user, report).await?,
            None => report,
        }))
    }

    type FetchChunksStream = FetchStream;

    async fn fetch_chunks(&self, request: Request<FetchChunksRequest>) -> Reply<FetchStream> {
        self.node.secret.check(&request)?;
        Ok(Response::new(fetch::open(
            self.node.clone(),
            request.into_inner(),
        )?))
    }
}
