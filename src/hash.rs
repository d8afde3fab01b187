//! blake3 digests as a small value type: chunk identities, file checksums.

use crate::{Error, Result};
use std::fmt;

/// A 32-byte blake3 digest.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Length of a digest in bytes.
    pub const LEN: usize = 32;

    /// blake3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// Parse the 32 raw bytes of a wire field; `what` names the field in the error.
    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::InvalidInput(format!(
                "{what}: a blake3 hash is 32 bytes, got {}",
                bytes.len()
            ))
        })?;
        Ok(Hash(arr))
    }

    /// Parse 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text)
            .map_err(|e| Error::InvalidInput(format!("bad hex hash {text:?}: {e}")))?;
        Self::from_slice(&bytes, "hash")
    }

    /// Lower-case hex, as `b3sum` prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes as a wire field.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&self.0)
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_b3sum_format() {
        let h = Hash::of(b"");
        assert_eq!(
            h.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
    }

    #[test]
    fn wrong_length_is_invalid_input() {
        assert!(matches!(
            Hash::from_slice(&[0; 31], "chunk"),
            Err(Error::InvalidInput(_))
        ));
    }
}
