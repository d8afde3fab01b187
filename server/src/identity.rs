//! A server's stable identity: a random id created once in its data
//! directory. Placement hashes on it, so moving a server to another address
//! keeps its share of files where it is.
//!
//! With TLS the id is also the common name of the server's certificate,
//! which the manager signs at enrolment (`data/tls/`): see
//! docs/operations.md, "Certificates and enrolment".

use dupla::rpc::{Secret, Transport};
use dupla::shutdown::Shutdown;
use dupla::tls::{self, NodeIdentity, ENROL_REPLY_LABEL, ENROL_REQUEST_LABEL};
use dupla::v1::enrolment_client::EnrolmentClient;
use dupla::v1::EnrolRequest;
use dupla::{Error, Result};
use std::path::Path;
use std::time::Duration;

/// File beside the certificate naming the address it was issued for: a
/// server that moves enrols again.
const CERT_ADDR_FILE: &str = "node.addr";

/// Wait between enrolment attempts while the manager is unreachable.
const ENROL_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The TLS transport of server `id` reached at `addr`: its stored
/// certificate if it was issued for this address, else a new one from the
/// manager, asked for again until the manager answers or `shutdown` fires.
pub async fn tls_transport(
    data: &Path,
    id: &str,
    addr: &str,
    manager: &str,
    secret: &Secret,
    mut shutdown: Shutdown,
) -> Result<Transport> {
    let dir = data.join(tls::SERVER_TLS_DIR);
    let ca = tls::read_optional(&dir.join(tls::CA_CERT_FILE))?;
    let identity = NodeIdentity::load(&dir)?.filter(|i| i.name().as_deref() == Some(id));
    let issued_for = tls::read_optional(&dir.join(CERT_ADDR_FILE))?;
    if let (Some(ca), Some(identity)) = (&ca, &identity) {
        if issued_for.as_deref().map(str::trim) == Some(addr) {
            return Ok(Transport::tls(ca.clone(), Some(identity.clone())));
        }
    }
    let previous = ca.zip(identity);
    let mut warned = false;
    loop {
        match enrol(&dir, id, addr, manager, secret, previous.clone()).await {
            Err(Error::Unavailable(why)) => {
                if tls::is_certificate_error(&why) {
                    return Err(Error::Unavailable(format!(
                        "the manager at {manager} presents a certificate the CA in {} did not sign: if the cluster was re-created, delete that folder to enrol again ({why})",
                        dir.display()
                    )));
                }
                if !warned {
                    tracing::warn!(%manager, error = %why, "cannot enrol with the manager yet; will keep trying");
                    warned = true;
                }
            }
            other => return other,
        }
        tokio::select! {
            _ = tokio::time::sleep(ENROL_RETRY_INTERVAL) => {}
            _ = shutdown.wait() => {
                return Err(Error::Unavailable("shut down before enrolling with the manager".into()))
            }
        }
    }
}

/// One enrolment: trust the manager's CA on first use (`previous` holds
/// the CA and certificate of an earlier enrolment, presented to renew),
/// send a certificate request with a proof of the secret, and keep the
/// result only if the reply proves the secret too.
async fn enrol(
    dir: &Path,
    id: &str,
    addr: &str,
    manager: &str,
    secret: &Secret,
    previous: Option<(String, NodeIdentity)>,
) -> Result<Transport> {
    let (ca_pem, current) = match previous {
        Some((ca, identity)) => (ca, Some(identity)),
        None => (tls::fetch_ca(manager).await?, None),
    };
    let (key, csr_pem) = tls::new_request(id)?;
    let proof = secret.proof(&[
        ENROL_REQUEST_LABEL,
        id.as_bytes(),
        addr.as_bytes(),
        csr_pem.as_bytes(),
    ]);
    let channel = Transport::tls(ca_pem.clone(), current)
        .connect(manager)
        .await?;
    let reply = EnrolmentClient::new(channel)
        .enrol(EnrolRequest {
            server_id: id.to_string(),
            addr: addr.to_string(),
            csr_pem,
            proof: proof.to_vec().into(),
        })
        .await
        .map_err(|status| {
            if std::error::Error::source(&status).is_some() {
                Error::Unavailable(format!(
                    "enrolment call failed: {}",
                    tls::error_chain(&status)
                ))
            } else {
                Error::from_status(status)
            }
        })?
        .into_inner();
    let parts: [&[u8]; 4] = [
        ENROL_REPLY_LABEL,
        &proof,
        reply.cert_pem.as_bytes(),
        reply.ca_pem.as_bytes(),
    ];
    if !secret.check_proof(&reply.proof, &parts) || !tls::same_certificate(&reply.ca_pem, &ca_pem) {
        return Err(Error::PermissionDenied(format!(
            "the manager at {manager} did not prove it knows the cluster secret: its CA is not trusted (is `secret` the same on every node?)"
        )));
    }
    let identity = NodeIdentity {
        chain_pem: reply.cert_pem,
        key_pem: key.serialize_pem(),
    };
    identity.save(dir)?;
    tls::write_durably(&dir.join(tls::CA_CERT_FILE), ca_pem.as_bytes(), false)?;
    tls::write_durably(&dir.join(CERT_ADDR_FILE), addr.as_bytes(), false)?;
    tracing::info!(%id, %addr, ca = %tls::fingerprint(&ca_pem), "enrolled with the manager");
    Ok(Transport::tls(ca_pem, Some(identity)))
}

const ID_FILE: &str = "node_id";

/// Read the id in `data/node_id`, creating it on first start.
pub fn load_or_create(data: &Path) -> Result<String> {
    let path = data.join(ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("srv-{}", hex::encode(rand::random::<[u8; 8]>()));
    let tmp = data.join(format!("{ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_is_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_or_create(dir.path()).unwrap();
        let b = super::load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("srv-"));
    }
}
