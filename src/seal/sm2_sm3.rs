//! SM2 signatures with SM3 (GB/T 32918.2-2016 / GM/T 0003.2-2012, hash GB/T 32905 / GM/T
//! 0004) over the SM2 recommended curve, through RustCrypto's `sm2` crate.
//!
//! - Keys are PKCS#8 (`id-ecPublicKey` with the SM2 curve OID 1.2.156.10197.1.301), PEM on
//!   disk, as `openssl genpkey -algorithm SM2` writes them.
//! - The public key is published as the 65-byte uncompressed SEC1 point `04 || x || y`.
//! - Signatures are the fixed 64 bytes `r || s` (big endian), not DER.
//! - The signer's distinguishing identifier (user ID) that enters `Z_A` is the standard's
//!   default [`DEFAULT_USER_ID`] `"1234567812345678"` (GM/T 0009-2012 §10; also OpenSSL's
//!   and GmSSL's default). A verifier must use the same ID: a signature made with another ID
//!   does not verify.
//! - Signing is deterministic (the nonce is derived as in RFC 6979 with SM3), so it needs no
//!   random number generator at run time.

use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use sm2::dsa::signature::{Signer as _, Verifier as _};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use super::{Alg, SealError, Signer, key_id_of, read_or_create_key_file};

/// The default SM2 user ID (GM/T 0009-2012): what every seal signature and verification uses.
pub const DEFAULT_USER_ID: &str = "1234567812345678";

/// SM2 signer backed by a PKCS#8 key file.
pub struct Sm2Signer {
    key: SigningKey,
    public: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for Sm2Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm2Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Sm2Signer {
    /// Loads the SM2 PKCS#8 key at `path` (PEM or DER), or creates one there (mode 0600,
    /// fsync'd) if none exists. Concurrent creators end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let der = read_or_create_key_file(Alg::Sm2Sm3, path)?;
        Self::from_pkcs8(&der).map_err(|reason| SealError::BadKey {
            path: path.to_path_buf(),
            alg: Alg::Sm2Sm3,
            reason,
        })
    }

    /// Signer from a PKCS#8 document (DER) holding an SM2 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let secret = sm2::SecretKey::from_pkcs8_der(der).map_err(|e| e.to_string())?;
        let key = SigningKey::new(DEFAULT_USER_ID, &secret).map_err(|e| e.to_string())?;
        let public = key.verifying_key().to_sec1_bytes().to_vec();
        let key_id = key_id_of(&public);
        Ok(Sm2Signer {
            key,
            public,
            key_id,
        })
    }
}

impl Signer for Sm2Signer {
    fn alg(&self) -> Alg {
        Alg::Sm2Sm3
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(msg);
        signature.to_bytes().to_vec()
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }
}

/// A fresh SM2 private key as PKCS#8 DER, from the system random number generator.
pub(super) fn generate_pkcs8() -> Result<Vec<u8>, SealError> {
    let rng = SystemRandom::new();
    // A uniformly random 256-bit string is a valid scalar (non-zero, below the group order)
    // with probability ≈ 1 − 2^-32; draw again otherwise.
    for _ in 0..64 {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).map_err(|_| SealError::Random)?;
        if let Ok(secret) = sm2::SecretKey::from_slice(&bytes) {
            return secret
                .to_pkcs8_der()
                .map(|doc| doc.as_bytes().to_vec())
                .map_err(|_| SealError::Random);
        }
    }
    Err(SealError::Random)
}

/// Checks that `key` is an uncompressed SEC1 point on the SM2 curve.
pub(super) fn check_public_key(key: &[u8]) -> Result<(), String> {
    if key.len() != 65 || key[0] != 0x04 {
        return Err(format!(
            "sm2 public key must be a 65-byte uncompressed point (04 || x || y), found {} bytes",
            key.len()
        ));
    }
    VerifyingKey::from_sec1_bytes(DEFAULT_USER_ID, key)
        .map(|_| ())
        .map_err(|_| "sm2 public key is not a point on the sm2 curve".to_string())
}

/// Verifies a 64-byte `r || s` SM2 signature over `msg` with the default user ID.
pub(super) fn verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), SealError> {
    let key = VerifyingKey::from_sec1_bytes(DEFAULT_USER_ID, public_key)
        .map_err(|_| SealError::BadSignature)?;
    let signature = Signature::from_slice(signature).map_err(|_| SealError::BadSignature)?;
    key.verify(msg, &signature)
        .map_err(|_| SealError::BadSignature)
}

/// SM3 digest (GB/T 32905-2016) of `data`.
pub fn sm3(data: &[u8]) -> [u8; 32] {
    use sm3::Digest as _;
    sm3::Sm3::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::PublicKey;

    #[test]
    fn sm3_matches_the_gb_t_32905_examples() {
        // GB/T 32905-2016 Appendix A, examples 1 and 2.
        assert_eq!(
            hex::encode(sm3(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            hex::encode(sm3("abcd".repeat(16).as_bytes())),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    /// A key, message and signature made by OpenSSL 3.0
    /// (`openssl pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:1234567812345678`),
    /// an independent implementation: the seal verifier must accept it, and our signer,
    /// loading OpenSSL's PKCS#8 file, must publish the same public key.
    #[test]
    fn verifies_an_openssl_signature_with_the_default_user_id() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/seal");
        let key_pem = std::fs::read(dir.join("sm2-openssl.key")).unwrap();
        let public_hex = std::fs::read_to_string(dir.join("sm2-openssl.pub.hex")).unwrap();
        let msg = std::fs::read(dir.join("sm2-openssl.msg")).unwrap();
        let sig_der = std::fs::read(dir.join("sm2-openssl.sig.der")).unwrap();

        let der = super::super::pkcs8_der(&key_pem).unwrap();
        let signer = Sm2Signer::from_pkcs8(&der).unwrap();
        assert_eq!(hex::encode(signer.public_key()), public_hex.trim());

        let sig = sm2::dsa::DerSignature::try_from(sig_der.as_slice()).unwrap();
        let raw = Signature::try_from(sig).unwrap().to_bytes().to_vec();
        let key = PublicKey::new(Alg::Sm2Sm3, signer.public_key()).unwrap();
        key.verify_signature(&msg, &raw).unwrap();
        // One changed byte in the message, or another user ID, and it does not verify.
        let mut other = msg.clone();
        other[0] ^= 1;
        assert!(key.verify_signature(&other, &raw).is_err());
        let other_id =
            VerifyingKey::from_sec1_bytes("ALICE123@YAHOO.COM", &signer.public_key()).unwrap();
        assert!(
            other_id
                .verify(&msg, &Signature::from_slice(&raw).unwrap())
                .is_err()
        );
        // And our own signature over the same message verifies too.
        key.verify_signature(&msg, &signer.sign(&msg)).unwrap();
    }

    #[test]
    fn sign_verify_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Sm2Signer::load_or_create(&dir.path().join("k/sm2.key")).unwrap();
        let key = signer.verifying_key();
        assert_eq!(key.alg(), Alg::Sm2Sm3);
        assert_eq!(key.bytes().len(), 65);
        let sig = signer.sign(b"message");
        assert_eq!(sig.len(), 64);
        key.verify_signature(b"message", &sig).unwrap();
        assert!(matches!(
            key.verify_signature(b"messagE", &sig),
            Err(SealError::BadSignature)
        ));
        let mut flipped = sig.clone();
        flipped[10] ^= 0x80;
        assert!(key.verify_signature(b"message", &flipped).is_err());
        assert!(key.verify_signature(b"message", &sig[..63]).is_err());
        assert!(key.verify_signature(b"message", &[0u8; 64]).is_err());
    }

    #[test]
    fn key_file_is_stable_private_and_of_the_right_kind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sm2.key");
        let first = Sm2Signer::load_or_create(&path).unwrap();
        let second = Sm2Signer::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");

        // An Ed25519 key file is refused with a message naming the file and algorithm.
        let ed = dir.path().join("ed.key");
        crate::seal::Ed25519Signer::load_or_create(&ed).unwrap();
        let err = Sm2Signer::load_or_create(&ed).unwrap_err().to_string();
        assert!(err.contains("ed.key") && err.contains("sm2-sm3"), "{err}");
    }

    #[test]
    fn public_keys_are_checked() {
        assert!(check_public_key(&[4u8; 65]).is_err());
        assert!(check_public_key(&[4u8; 33]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let signer = Sm2Signer::load_or_create(&dir.path().join("k")).unwrap();
        check_public_key(&signer.public_key()).unwrap();
    }
}
