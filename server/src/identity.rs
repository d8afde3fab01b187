//! A server's stable identity: a random id created once in its data
//! directory. Placement hashes on it, so moving a server to another address
//! keeps its share of files where it is.

use dupla::Result;
use std::path::Path;

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
