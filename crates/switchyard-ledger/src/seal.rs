//! Sealed records (design note 0002). The ledger must keep one thing whole: a waiting
//! command, which it dead-letters for replay should the wait fail. That copy is stored
//! encrypted (XChaCha20-Poly1305, a random nonce per record, the key derived from
//! `ledger.record_key` with HKDF-SHA256); the copy anyone can read beside it is redacted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The form of a sealed value: `v1:` then base64 of nonce and ciphertext.
const VERSION: &str = "v1:";
/// Bytes of an XChaCha20 nonce.
const NONCE_BYTES: usize = 24;

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Not a value this version sealed.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under another key, or altered.
    #[error("the record key does not open it (another key, or the value was altered)")]
    Key,
}

/// Seals and opens with one key. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer whose key is derived from `secret` (any length; use 32 random bytes or more).
    pub fn new(secret: &str) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"switchyard-ledger"), secret.as_bytes());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 8160: this cannot fail.
        let _ = hk.expand(b"sealed records v1", &mut key);
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `plaintext`, encrypted and authenticated, as text for a column.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption fails only past the cipher's length limit (256 GiB), far beyond any record.
        let sealed = self.cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{VERSION}{}", B64.encode(bytes))
    }

    /// The plaintext of a value [`Sealer::seal`] made with the same key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = sealed
            .strip_prefix(VERSION)
            .and_then(|b| B64.decode(b).ok())
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(SealError::Malformed)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let s = Sealer::new("k1");
        let sealed = s.seal(b"card_token tok_CANARY");
        assert!(!sealed.contains("CANARY"));
        assert_ne!(
            sealed,
            s.seal(b"card_token tok_CANARY"),
            "a nonce per value"
        );
        assert_eq!(s.open(&sealed).unwrap(), b"card_token tok_CANARY");
        assert!(matches!(
            Sealer::new("k2").open(&sealed),
            Err(SealError::Key)
        ));
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(s.open(&altered).is_err());
        assert!(matches!(s.open("plain"), Err(SealError::Malformed)));
        assert_eq!(format!("{s:?}"), "Sealer(..)");
    }
}
