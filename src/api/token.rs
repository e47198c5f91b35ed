//! Officer tokens: which officer of which agency made a request, signed by
//! the agency's client-certificate key and verified with the public key of
//! the certificate presented on the connection.
//!
//! A token is `base64url(claims JSON) "." base64url(signature)` (no
//! padding). The signature is ECDSA P-256 with SHA-256, fixed-length
//! (r ‖ s, 64 bytes), over [`SIGNED_PREFIX`] followed by the first part as
//! sent. The prefix keeps a token signature from ever being mistaken for a
//! signature of anything else the same key signs (TLS 1.3 handshakes sign
//! their own, different context strings). Claims: officer id, agency id,
//! issued-at and expiry (Unix seconds, at most [`MAX_LIFETIME_SECS`] apart)
//! and a random nonce, so that every token is distinct and the audit log
//! can keep it as evidence of who asked.

use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine as _};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

/// The request header that carries the token.
pub const HEADER: &str = "x-officer-token";
/// Signed bytes are this prefix followed by the claims part of the token.
pub const SIGNED_PREFIX: &[u8] = b"sharebroker-officer-token-v1\n";
/// Longest accepted lifetime (`exp - iat`): 10 minutes.
pub const MAX_LIFETIME_SECS: i64 = 600;
/// How far in the future `iat` may lie (clock skew between agency and broker).
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// Longest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The officer's id within the agency (1–64 characters, no control characters).
    pub officer: String,
    /// The agency id the officer acts for.
    pub agency: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Random, lowercase hex, at least 16 characters.
    pub nonce: String,
}

/// Why a token was not accepted. Messages say what is wrong with the token,
/// never anything about the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no `x-officer-token` header: every request names its officer in a signed token")]
    Missing,
    #[error("officer token is malformed: {0}")]
    Malformed(&'static str),
    #[error("officer token signature does not verify with the client certificate's key")]
    BadSignature,
    #[error("the client certificate's key cannot verify officer tokens (ECDSA P-256 is required)")]
    UnsupportedKey,
    #[error("officer token has expired")]
    Expired,
    #[error("officer token is issued in the future")]
    NotYetValid,
    #[error("officer token lives longer than {MAX_LIFETIME_SECS} s")]
    TooLong,
    #[error(
        "officer token names agency `{token}`, but the client certificate is `{certificate}`'s"
    )]
    WrongAgency { token: String, certificate: String },
    #[error("cannot sign an officer token: {0}")]
    Signing(String),
}

/// The public key of a client certificate, as the verifier needs it: the
/// uncompressed P-256 point, or `None` when the certificate's key is of
/// another kind (tokens from it are refused).
pub fn certificate_key(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    (spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256))
        .then(|| spki.subject_public_key.data.to_vec())
}

fn valid_officer(officer: &str) -> bool {
    let n = officer.chars().count();
    (1..=64).contains(&n) && officer.trim() == officer && !officer.chars().any(char::is_control)
}

/// Check `token` against the connection's certificate key and agency at
/// `now` (Unix seconds). Returns the claims when every check passes.
pub fn verify(
    token: &str,
    certificate_key: Option<&[u8]>,
    agency: &str,
    now: i64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 2048 bytes"));
    }
    let (claims_part, sig_part) = token.split_once('.').ok_or(TokenError::Malformed(
        "expected two base64url parts joined by `.`",
    ))?;
    let claims_json = BASE64_URL_SAFE_NO_PAD
        .decode(claims_part)
        .map_err(|_| TokenError::Malformed("the claims are not base64url"))?;
    let signature = BASE64_URL_SAFE_NO_PAD
        .decode(sig_part)
        .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    let key = certificate_key.ok_or(TokenError::UnsupportedKey)?;
    let mut msg = Vec::with_capacity(SIGNED_PREFIX.len() + claims_part.len());
    msg.extend_from_slice(SIGNED_PREFIX);
    msg.extend_from_slice(claims_part.as_bytes());
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(&msg, &signature)
        .map_err(|_| TokenError::BadSignature)?;
    // Only signed claims are parsed.
    let claims: Claims = serde_json::from_slice(&claims_json)
        .map_err(|_| TokenError::Malformed("the claims are not the expected json object"))?;
    check_claims(&claims, agency, now)?;
    Ok(claims)
}

/// The checks that depend on time and on the connection's agency; run on
/// every request, also when the signature was verified earlier on the same
/// connection.
pub fn check_claims(claims: &Claims, agency: &str, now: i64) -> Result<(), TokenError> {
    if !valid_officer(&claims.officer) {
        return Err(TokenError::Malformed(
            "`officer` is 1–64 characters without surrounding spaces or control characters",
        ));
    }
    if claims.nonce.len() < 16
        || claims.nonce.len() > 64
        || !claims
            .nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(TokenError::Malformed(
            "`nonce` is 16–64 lowercase hex digits",
        ));
    }
    if claims.agency != agency {
        return Err(TokenError::WrongAgency {
            token: claims.agency.chars().take(64).collect(),
            certificate: agency.to_string(),
        });
    }
    if claims.exp <= claims.iat {
        return Err(TokenError::Malformed("`exp` is not after `iat`"));
    }
    if claims.exp - claims.iat > MAX_LIFETIME_SECS {
        return Err(TokenError::TooLong);
    }
    if claims.iat > now + MAX_CLOCK_SKEW_SECS {
        return Err(TokenError::NotYetValid);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// Mints tokens with an agency's client-certificate key (PKCS#8 ECDSA P-256):
/// what an agency system, the test client and `sharebroker pki token` use.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    agency: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("agency", &self.agency)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for `agency` from a PKCS#8 DER private key.
    pub fn from_pkcs8(pkcs8: &[u8], agency: &str) -> Result<TokenSigner, TokenError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| TokenError::Signing(format!("not an ecdsa p-256 pkcs#8 key: {e}")))?;
        Ok(TokenSigner {
            key,
            agency: agency.to_string(),
            rng,
        })
    }

    /// The agency its tokens name.
    pub fn agency(&self) -> &str {
        &self.agency
    }

    /// A token for `officer`, valid from `iat` for `lifetime_secs`.
    pub fn mint_at(
        &self,
        officer: &str,
        iat: i64,
        lifetime_secs: i64,
    ) -> Result<String, TokenError> {
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| TokenError::Signing("system random number generator failed".into()))?;
        let claims = Claims {
            officer: officer.to_string(),
            agency: self.agency.clone(),
            iat,
            exp: iat + lifetime_secs,
            nonce: hex::encode(nonce),
        };
        self.mint_claims(&claims)
    }

    /// A token for `officer`, issued now, valid for `lifetime_secs`.
    pub fn mint(&self, officer: &str, lifetime_secs: i64) -> Result<String, TokenError> {
        self.mint_at(officer, chrono::Utc::now().timestamp(), lifetime_secs)
    }

    /// A token over exactly these claims (tests use it to build bad ones).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, TokenError> {
        let json = serde_json::to_vec(claims).map_err(|e| TokenError::Signing(e.to_string()))?;
        let claims_part = BASE64_URL_SAFE_NO_PAD.encode(json);
        let mut msg = Vec::with_capacity(SIGNED_PREFIX.len() + claims_part.len());
        msg.extend_from_slice(SIGNED_PREFIX);
        msg.extend_from_slice(claims_part.as_bytes());
        let sig = self
            .key
            .sign(&self.rng, &msg)
            .map_err(|_| TokenError::Signing("ecdsa signing failed".into()))?;
        Ok(format!(
            "{claims_part}.{}",
            BASE64_URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }
}

/// Tokens a connection has verified, with their claims: a repeated token
/// costs a hash and a comparison, not a signature check (an ECDSA
/// verification, about a hundred times the rest of a lookup's token work).
/// One HTTP/2 connection, or a gateway's keep-alive connection, carries
/// many officers' tokens at once, so it keeps several; when full, the
/// oldest entry makes room.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    /// (hash of the token, token, claims), at most [`VerifiedTokens::CAPACITY`].
    entries: Vec<(u64, String, Claims)>,
    /// The slot the next new token takes once full.
    next: usize,
    hasher: std::hash::RandomState,
}

impl VerifiedTokens {
    /// Distinct tokens kept per connection.
    pub const CAPACITY: usize = 32;

    /// The claims of `token` if it was verified on this connection.
    pub fn get(&self, token: &str) -> Option<&Claims> {
        let h = std::hash::BuildHasher::hash_one(&self.hasher, token);
        self.entries
            .iter()
            .find(|(eh, t, _)| *eh == h && t == token)
            .map(|(_, _, claims)| claims)
    }

    /// Remember a token whose signature verified.
    pub fn insert(&mut self, token: &str, claims: Claims) {
        let entry = (
            std::hash::BuildHasher::hash_one(&self.hasher, token),
            token.to_string(),
            claims,
        );
        if self.entries.len() < Self::CAPACITY {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % Self::CAPACITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Vec<u8>, Vec<u8>) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (kp.serialize_der(), kp.public_key_raw().to_vec())
    }

    #[test]
    fn a_connection_keeps_the_tokens_it_verified_and_drops_the_oldest_when_full() {
        let claims = |n: usize| Claims {
            officer: format!("o{n}"),
            agency: "a".into(),
            iat: 1,
            exp: 2,
            nonce: "0123456789abcdef".into(),
        };
        let mut cache = VerifiedTokens::default();
        let n = VerifiedTokens::CAPACITY;
        for i in 0..n {
            cache.insert(&format!("token-{i}"), claims(i));
        }
        for i in 0..n {
            assert_eq!(cache.get(&format!("token-{i}")), Some(&claims(i)), "{i}");
        }
        assert_eq!(cache.get("token-x"), None);
        assert_eq!(cache.get("token-1x"), None, "a prefix is not the token");
        cache.insert("token-new", claims(99));
        assert_eq!(cache.get("token-new"), Some(&claims(99)));
        assert_eq!(cache.get("token-0"), None, "the oldest made room");
        assert_eq!(cache.get("token-1"), Some(&claims(1)));
        cache.insert("token-newer", claims(100));
        assert_eq!(cache.get("token-1"), None, "then the next oldest");
        assert_eq!(cache.get("token-new"), Some(&claims(99)));
    }

    #[test]
    fn a_minted_token_verifies_for_its_agency_only() {
        let (der, public) = key();
        let s = TokenSigner::from_pkcs8(&der, "xj-mzt").unwrap();
        let t = s.mint_at("mz-007", 1_000, 300).unwrap();
        let c = verify(&t, Some(&public), "xj-mzt", 1_100).unwrap();
        assert_eq!(c.officer, "mz-007");
        assert_eq!(c.agency, "xj-mzt");
        assert_eq!(c.exp, 1_300);
        assert!(matches!(
            verify(&t, Some(&public), "xj-gjj", 1_100),
            Err(TokenError::WrongAgency { .. })
        ));
        // Two tokens for the same officer differ (nonce).
        assert_ne!(t, s.mint_at("mz-007", 1_000, 300).unwrap());
    }

    #[test]
    fn time_checks() {
        let (der, public) = key();
        let s = TokenSigner::from_pkcs8(&der, "a").unwrap();
        let t = s.mint_at("o", 1_000, 600).unwrap();
        assert_eq!(
            verify(&t, Some(&public), "a", 1_600),
            Err(TokenError::Expired)
        );
        assert_eq!(verify(&t, Some(&public), "a", 1_599).map(|_| ()), Ok(()));
        assert_eq!(
            verify(&t, Some(&public), "a", 939),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&t, Some(&public), "a", 940).is_ok());
        let long = s.mint_at("o", 1_000, 601).unwrap();
        assert_eq!(
            verify(&long, Some(&public), "a", 1_001),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn forged_and_damaged_tokens_are_refused() {
        let (der, public) = key();
        let (other_der, _) = key();
        let s = TokenSigner::from_pkcs8(&der, "a").unwrap();
        let forger = TokenSigner::from_pkcs8(&other_der, "a").unwrap();
        let t = s.mint_at("o", 1_000, 600).unwrap();
        // Signed by another key.
        let forged = forger.mint_at("o", 1_000, 600).unwrap();
        assert_eq!(
            verify(&forged, Some(&public), "a", 1_001),
            Err(TokenError::BadSignature)
        );
        // Claims swapped under a valid signature.
        let (_, sig) = t.split_once('.').unwrap();
        let other_claims = s.mint_at("boss", 1_000, 600).unwrap();
        let (claims, _) = other_claims.split_once('.').unwrap();
        assert_eq!(
            verify(&format!("{claims}.{sig}"), Some(&public), "a", 1_001),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "abc",
            "a.b.c",
            "!!.!!",
            &format!("{t}x"),
            &"a".repeat(3000),
        ] {
            assert!(verify(bad, Some(&public), "a", 1_001).is_err(), "{bad}");
        }
        assert_eq!(
            verify(&t, None, "a", 1_001),
            Err(TokenError::UnsupportedKey)
        );
        // A signature over the claims without the prefix does not verify.
        let (claims, _) = t.split_once('.').unwrap();
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
        let raw = kp.sign(&rng, claims.as_bytes()).unwrap();
        let unprefixed = format!("{claims}.{}", BASE64_URL_SAFE_NO_PAD.encode(raw.as_ref()));
        assert_eq!(
            verify(&unprefixed, Some(&public), "a", 1_001),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn claims_are_checked() {
        let (der, public) = key();
        let s = TokenSigner::from_pkcs8(&der, "a").unwrap();
        let base = Claims {
            officer: "o".into(),
            agency: "a".into(),
            iat: 1_000,
            exp: 1_100,
            nonce: "0123456789abcdef".into(),
        };
        let cases: Vec<(Claims, &str)> = vec![
            (
                Claims {
                    officer: String::new(),
                    ..base.clone()
                },
                "officer",
            ),
            (
                Claims {
                    officer: " o".into(),
                    ..base.clone()
                },
                "officer",
            ),
            (
                Claims {
                    officer: "o\n".into(),
                    ..base.clone()
                },
                "officer",
            ),
            (
                Claims {
                    officer: "x".repeat(65),
                    ..base.clone()
                },
                "officer",
            ),
            (
                Claims {
                    nonce: "short".into(),
                    ..base.clone()
                },
                "nonce",
            ),
            (
                Claims {
                    nonce: "0123456789ABCDEF".into(),
                    ..base.clone()
                },
                "nonce",
            ),
            (
                Claims {
                    exp: 1_000,
                    ..base.clone()
                },
                "exp",
            ),
        ];
        for (c, what) in cases {
            let t = s.mint_claims(&c).unwrap();
            let e = verify(&t, Some(&public), "a", 1_001).unwrap_err();
            assert!(matches!(e, TokenError::Malformed(_)), "{c:?}: {e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        // A Chinese officer name is fine.
        let t = s
            .mint_claims(&Claims {
                officer: "买买提·艾力".into(),
                ..base.clone()
            })
            .unwrap();
        assert!(verify(&t, Some(&public), "a", 1_001).is_ok());
        // Unknown claims are refused even when signed.
        let mut v = serde_json::to_value(&base).unwrap();
        v["role"] = serde_json::json!("admin");
        let part = BASE64_URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
        let mut msg = SIGNED_PREFIX.to_vec();
        msg.extend_from_slice(part.as_bytes());
        let sig = kp.sign(&rng, &msg).unwrap();
        let t = format!("{part}.{}", BASE64_URL_SAFE_NO_PAD.encode(sig.as_ref()));
        assert!(matches!(
            verify(&t, Some(&public), "a", 1_001),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn certificate_keys_are_extracted_from_p256_certificates() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(
            certificate_key(&parsed).as_deref(),
            Some(kp.public_key_raw())
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&ed)
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(certificate_key(&parsed), None);
    }
}
