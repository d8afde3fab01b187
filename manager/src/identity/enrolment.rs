//! Enrolment: the manager signs storage servers' certificates (see
//! docs/operations.md, "Certificates and enrolment").
//!
//! A new server does not trust the CA yet, so it cannot send the cluster
//! secret: both sides prove they know it with keyed hashes instead
//! ([`dupla::rpc::Secret::proof`]). A server id the manager already knows
//! is re-enrolled only over a connection made with that id's current
//! certificate, so the secret alone does not let one server take another's
//! identity.

use crate::state::State;
use dupla::tls::{cert_hosts, host_of, Ca, ENROL_REPLY_LABEL, ENROL_REQUEST_LABEL};
use dupla::v1::enrolment_server::Enrolment;
use dupla::v1::{EnrolReply, EnrolRequest};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Longest server id accepted (they are `srv-` and 16 hex digits).
const MAX_ID_LEN: usize = 64;
/// Largest certificate request accepted, bytes of PEM.
const MAX_CSR_BYTES: usize = 8 << 10;

/// The `Enrolment` service.
pub struct EnrolmentService {
    state: Arc<State>,
    ca: Arc<Ca>,
}

impl EnrolmentService {
    /// Sign with `ca`, checking proofs with the state's secret.
    pub fn new(state: Arc<State>, ca: Arc<Ca>) -> Self {
        EnrolmentService { state, ca }
    }
}

#[tonic::async_trait]
impl Enrolment for EnrolmentService {
    async fn enrol(
        &self,
        request: Request<EnrolRequest>,
    ) -> std::result::Result<Response<EnrolReply>, Status> {
        let presented = dupla::tls::peer_name(&request);
        let req = request.into_inner();
        let id = &req.server_id;
        let id_ok = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !id_ok || req.addr.is_empty() || req.addr.len() > 300 {
            return Err(Status::invalid_argument(
                "enrolment needs a server id (letters, digits, - _ .; at most 64) and its host:port",
            ));
        }
        if req.csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument("certificate request too large"));
        }
        let parts: [&[u8]; 4] = [
            ENROL_REQUEST_LABEL,
            id.as_bytes(),
            req.addr.as_bytes(),
            req.csr_pem.as_bytes(),
        ];
        if !self.state.secret.check_proof(&req.proof, &parts) {
            tracing::warn!(%id, addr = %req.addr, "enrolment refused: bad proof of the cluster secret");
            return Err(Status::permission_denied(
                "enrolment refused: the request does not prove the cluster secret (is `secret` the same as the manager's?)",
            ));
        }
        let known = self.state.lock_membership().get(id).is_some();
        if known && presented.as_deref() != Some(id.as_str()) {
            tracing::warn!(%id, addr = %req.addr, "enrolment refused: id already enrolled");
            return Err(Status::permission_denied(format!(
                "server id {id} is already enrolled: renewing its certificate needs the current one (tls/node.pem and tls/node.key in its data directory); a server that lost them must start afresh with an empty data directory"
            )));
        }
        let cert_pem = self
            .ca
            .sign_request(&req.csr_pem, id, &cert_hosts(&[host_of(&req.addr)]))
            .map_err(Status::from)?;
        let ca_pem = self.ca.pem().to_string();
        let proof = self.state.secret.proof(&[
            ENROL_REPLY_LABEL,
            &req.proof,
            cert_pem.as_bytes(),
            ca_pem.as_bytes(),
        ]);
        tracing::info!(%id, addr = %req.addr, "enrolled a storage server");
        Ok(Response::new(EnrolReply {
            cert_pem,
            ca_pem,
            proof: proof.to_vec().into(),
        }))
    }
}
