//! Seals (broker signatures) over JSON responses, verifiable offline with the published key.
//!
//! Two algorithms ([`Alg`]): Ed25519 (default) and SM2 with SM3 (GB/T 32918.2 / GM/T 0003,
//! the national standards; see [`sm2_sm3`]). Two forms of seal ([`SealMode`]):
//! - per response: `"seal": {"alg":..,"key_id":..,"signature":..}` inside the response object;
//!   the signature covers [`canonical_json`] of the object without its `"seal"` member;
//! - per batch ([`batch`]): one signature per audit group commit over a Merkle tree of the
//!   batch's responses; each response carries its inclusion path and the signed batch head.
//!
//! [`verify`] checks either form with only the published key.

pub mod batch;
pub mod sm2_sm3;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::Value;

pub use self::sm2_sm3::Sm2Signer;

/// Name of the Ed25519 algorithm in seals, tree heads and the published key.
pub const ALG_ED25519: &str = "ed25519";
/// Name of SM2 signatures over SM3 (GB/T 32918.2) in seals, tree heads and the published key.
pub const ALG_SM2_SM3: &str = "sm2-sm3";
/// Key of the seal member inside a sealed document.
pub const SEAL_KEY: &str = "seal";

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A seal signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (RFC 8032): 32-byte public key, 64-byte signature.
    Ed25519,
    /// SM2 digital signature with SM3 (GB/T 32918.2-2016, GM/T 0003.2-2012) on the SM2
    /// recommended curve, with the default user ID [`sm2_sm3::DEFAULT_USER_ID`]: 65-byte
    /// uncompressed SEC1 public key, 64-byte signature `r || s` (big endian).
    Sm2Sm3,
}

impl Alg {
    /// Every algorithm, for error messages.
    pub const ALL: [Alg; 2] = [Alg::Ed25519, Alg::Sm2Sm3];

    /// The name written into seals, heads and key files.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Ed25519 => ALG_ED25519,
            Alg::Sm2Sm3 => ALG_SM2_SM3,
        }
    }

    /// The algorithm of a name, if known.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Generates a fresh key and returns it as a PKCS#8 v1/v2 document (DER).
    fn generate_pkcs8(self) -> Result<Vec<u8>, SealError> {
        match self {
            Alg::Ed25519 => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| SealError::Random),
            Alg::Sm2Sm3 => sm2_sm3::generate_pkcs8(),
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per response (one signature each) or per audit group commit (one signature per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealMode {
    /// One signature over each response.
    Response,
    /// One signature per audit group commit over the batch's Merkle root.
    Batch,
}

impl SealMode {
    /// The name used in the settings file.
    pub fn name(self) -> &'static str {
        match self {
            SealMode::Response => "response",
            SealMode::Batch => "batch",
        }
    }
}

/// A verifying key: its algorithm, raw bytes and key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: Alg,
    key: Vec<u8>,
    key_id: String,
}

impl PublicKey {
    /// A key of `alg` from its raw bytes (Ed25519: 32 bytes; SM2: 65-byte uncompressed SEC1
    /// point, checked to be on the curve).
    pub fn new(alg: Alg, key: Vec<u8>) -> Result<PublicKey, String> {
        match alg {
            Alg::Ed25519 if key.len() != 32 => {
                return Err(format!(
                    "ed25519 public key must be 32 bytes, found {}",
                    key.len()
                ));
            }
            Alg::Ed25519 => {}
            Alg::Sm2Sm3 => sm2_sm3::check_public_key(&key)?,
        }
        let key_id = key_id_of(&key);
        Ok(PublicKey { alg, key, key_id })
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Raw key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// First 16 hex chars of SHA-256(key bytes).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Verifies a raw signature over `msg` (the primitive under [`verify`] and the audit
    /// log's signed tree heads).
    pub fn verify_signature(&self, msg: &[u8], signature: &[u8]) -> Result<(), SealError> {
        match self.alg {
            Alg::Ed25519 => UnparsedPublicKey::new(&ED25519, &self.key)
                .verify(msg, signature)
                .map_err(|_| SealError::BadSignature),
            Alg::Sm2Sm3 => sm2_sm3::verify(&self.key, msg, signature),
        }
    }

    /// Checks that a seal or head names this key's algorithm and key id.
    pub fn check_names(&self, alg: &str, key_id: &str) -> Result<(), SealError> {
        if alg != self.alg.name() {
            return Err(SealError::WrongAlg {
                found: alg.to_string(),
                expected: self.alg.name(),
            });
        }
        if key_id != self.key_id {
            return Err(SealError::KeyIdMismatch {
                expected: self.key_id.clone(),
                found: key_id.to_string(),
            });
        }
        Ok(())
    }
}

/// Errors of sealing, verifying and key handling.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key file could not be read, created or written.
    #[error("cannot {action} seal key {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but does not hold a usable PKCS#8 key of the configured algorithm.
    #[error("seal key {path} is not a valid {alg} pkcs#8 key: {reason}")]
    BadKey {
        path: std::path::PathBuf,
        alg: Alg,
        reason: String,
    },
    /// Key generation failed.
    #[error("cannot generate seal key: system random number generator failed")]
    Random,
    /// The document is not a JSON object.
    #[error("sealed document is not a json object")]
    NotAnObject,
    /// The document has no seal member.
    #[error("document has no \"seal\"")]
    NoSeal,
    /// The seal member is not shaped as expected.
    #[error("seal is malformed: {0}")]
    Malformed(&'static str),
    /// The seal names another algorithm than the verifying key's.
    #[error("seal algorithm {found:?} does not match the verifying key's ({expected:?})")]
    WrongAlg {
        found: String,
        expected: &'static str,
    },
    /// The seal's `type` is neither absent (per response) nor "batch".
    #[error("seal type {0:?} is not supported (expected \"batch\" or none)")]
    WrongType(String),
    /// The signature is not valid standard base64.
    #[error("seal signature is not valid base64: {0}")]
    BadBase64(#[source] base64::DecodeError),
    /// The seal was made by another key than the one given.
    #[error("seal key id {found} does not match the verifying key {expected}")]
    KeyIdMismatch { expected: String, found: String },
    /// A batch seal's proof does not fit the response (wrong entry number, bad path).
    #[error("batch seal does not cover this response: {0}")]
    BadProof(String),
    /// The signature does not verify: the document was altered or the key is wrong.
    #[error("seal signature does not verify (document altered or wrong key)")]
    BadSignature,
    /// A published public key file does not parse.
    #[error("public key file line {line}: {reason}")]
    BadPublicKeyFile { line: usize, reason: String },
}

/// Something that signs seals; `Send + Sync + 'static` so it can live in app state as `Arc<dyn Signer>`.
pub trait Signer: Send + Sync + 'static {
    /// Algorithm written into the seal.
    fn alg(&self) -> Alg;
    /// Short id of the key: first 16 hex chars of SHA-256(public key).
    fn key_id(&self) -> &str;
    /// Signature over `msg`.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
    /// Raw public key bytes.
    fn public_key(&self) -> Vec<u8>;
    /// The key that verifies this signer's signatures.
    fn verifying_key(&self) -> PublicKey {
        PublicKey {
            alg: self.alg(),
            key: self.public_key(),
            key_id: self.key_id().to_string(),
        }
    }
}

/// Loads the seal key of `alg` at `path`, creating it (PKCS#8 PEM, mode 0600, fsync'd) if
/// none exists.
pub fn load_or_create(alg: Alg, path: &Path) -> Result<std::sync::Arc<dyn Signer>, SealError> {
    Ok(match alg {
        Alg::Ed25519 => std::sync::Arc::new(Ed25519Signer::load_or_create(path)?),
        Alg::Sm2Sm3 => std::sync::Arc::new(Sm2Signer::load_or_create(path)?),
    })
}

/// Reads the PKCS#8 DER of a key file of `alg`, creating the file first if it is missing;
/// warns when the file is readable by others.
fn read_or_create_key_file(alg: Alg, path: &Path) -> Result<Vec<u8>, SealError> {
    if !path.exists() {
        create_key_file(alg, path)?;
    }
    let bytes = fs::read(path).map_err(|source| SealError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "seal key file is readable by group or others");
    }
    pkcs8_der(&bytes).map_err(|reason| SealError::BadKey {
        path: path.to_path_buf(),
        alg,
        reason,
    })
}

/// Ed25519 signer backed by a PKCS#8 key file.
pub struct Ed25519Signer {
    key_pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// Loads the PKCS#8 key at `path` (PEM or DER), or creates one there (mode 0600, fsync'd)
    /// if none exists. Concurrent creators end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let der = read_or_create_key_file(Alg::Ed25519, path)?;
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| SealError::BadKey {
                path: path.to_path_buf(),
                alg: Alg::Ed25519,
                reason: e.to_string(),
            })?;
        Ok(Self::from_key_pair(key_pair))
    }

    /// Signer from a PKCS#8 v1 or v2 document (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SealError> {
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| SealError::BadKey {
                path: "<memory>".into(),
                alg: Alg::Ed25519,
                reason: e.to_string(),
            })?;
        Ok(Self::from_key_pair(key_pair))
    }

    fn from_key_pair(key_pair: Ed25519KeyPair) -> Self {
        let key_id = key_id_of(key_pair.public_key().as_ref());
        Self { key_pair, key_id }
    }
}

impl Signer for Ed25519Signer {
    fn alg(&self) -> Alg {
        Alg::Ed25519
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key_pair.sign(msg).as_ref().to_vec()
    }

    fn public_key(&self) -> Vec<u8> {
        self.key_pair.public_key().as_ref().to_vec()
    }
}

/// Key id: first 16 hex chars of SHA-256(public key).
pub fn key_id_of(public_key: &[u8]) -> String {
    let mut id = hex::encode(digest(&SHA256, public_key).as_ref());
    id.truncate(16);
    id
}

/// Writes a fresh key to a temporary file, then hard-links it into place so an existing key
/// (say, from a concurrent creator) is never overwritten.
fn create_key_file(alg: Alg, path: &Path) -> Result<(), SealError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SealError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io("create directory for", path))?;
    let pem = to_pem(&alg.generate_pkcs8()?);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()
    };
    if let Err(source) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(SealError::Io {
            action: "create",
            path: tmp,
            source,
        });
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(source) => {
            return Err(SealError::Io {
                action: "install",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory of", path))
}

fn to_pem(der: &[u8]) -> String {
    let b64 = BASE64_STANDARD.encode(der);
    let mut pem = String::with_capacity(b64.len() + 80);
    pem.push_str(PEM_BEGIN);
    pem.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// DER bytes from a PEM "PRIVATE KEY" block or raw DER.
fn pkcs8_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither pem text nor der".to_string())?;
    let start = text
        .find(PEM_BEGIN)
        .ok_or("no \"BEGIN PRIVATE KEY\" block")?
        + PEM_BEGIN.len();
    let end = text[start..]
        .find(PEM_END)
        .ok_or("no \"END PRIVATE KEY\" line")?
        + start;
    let b64: String = text[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64_STANDARD
        .decode(b64)
        .map_err(|e| format!("pem body is not base64: {e}"))
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes at every level, no whitespace,
/// strings and numbers escaped and printed exactly as serde_json does.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, None, &mut out);
    out
}

/// [`canonical_json`] of a response body, and where its `audit_entry` number goes: the
/// offset just after the `{` of its `meta` object when it has one, else of the body itself.
/// `None` when the body is not an object.
pub fn canonical_response(v: &Value) -> Option<(Vec<u8>, usize)> {
    let Value::Object(map) = v else {
        return None;
    };
    let mut out = Vec::with_capacity(1024);
    let mut entry_at = 1;
    out.push(b'{');
    for (i, (k, item)) in sorted_members(map, None).into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(k, &mut out);
        out.push(b':');
        if k == "meta" && item.is_object() {
            entry_at = out.len() + 1;
        }
        write_canonical(item, None, &mut out);
    }
    out.push(b'}');
    Some((out, entry_at))
}

/// The members of `map` but `skip`, by the UTF-8 bytes of their names. serde_json's map
/// already iterates in that order unless its `preserve_order` feature is on; then they are
/// sorted here.
fn sorted_members<'a>(
    map: &'a serde_json::Map<String, Value>,
    skip: Option<&str>,
) -> Vec<(&'a String, &'a Value)> {
    let mut members: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    if !members.is_sorted_by(|a, b| a.0.as_bytes() <= b.0.as_bytes()) {
        members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    members
}

/// Writes `v` canonically; at the top level only, skips the member named `skip`.
fn write_canonical(v: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // As `Number`'s `Display` prints it, without a String on the way.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, None, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in sorted_members(map, skip).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(item, None, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing a string into a vec cannot fail");
}

/// Seals an object in place (per-response form): removes any old seal, signs the canonical
/// bytes of the rest, and inserts `"seal"`. A non-object document is a programming error: it
/// is left unsealed (and will fail [`verify`]).
pub fn seal(signer: &dyn Signer, doc: &mut Value) {
    let Value::Object(map) = doc else {
        debug_assert!(false, "seal called on a non-object json value");
        tracing::error!("seal called on a non-object json value; response left unsealed");
        return;
    };
    map.remove(SEAL_KEY);
    let signature = signer.sign(&canonical_json(doc));
    let seal = serde_json::json!({
        "alg": signer.alg().name(),
        "key_id": signer.key_id(),
        "signature": BASE64_STANDARD.encode(signature),
    });
    if let Value::Object(map) = doc {
        map.insert(SEAL_KEY.to_string(), seal);
    }
}

/// Verifies a sealed object, in either form (per response or per batch), against the
/// broker's published key.
pub fn verify(key: &PublicKey, doc: &Value) -> Result<(), SealError> {
    let Value::Object(map) = doc else {
        return Err(SealError::NotAnObject);
    };
    let seal = map.get(SEAL_KEY).ok_or(SealError::NoSeal)?;
    if !seal.is_object() {
        return Err(SealError::Malformed("seal is not an object"));
    }
    key.check_names(str_member(seal, "alg")?, str_member(seal, "key_id")?)?;
    match seal.get("type") {
        None => {}
        Some(Value::String(t)) if t == batch::SEAL_TYPE => return batch::verify(key, doc),
        Some(Value::String(t)) => return Err(SealError::WrongType(t.clone())),
        Some(_) => return Err(SealError::Malformed("type")),
    }
    let signature = BASE64_STANDARD
        .decode(str_member(seal, "signature")?)
        .map_err(SealError::BadBase64)?;
    let mut msg = Vec::with_capacity(256);
    write_canonical(doc, Some(SEAL_KEY), &mut msg);
    key.verify_signature(&msg, &signature)
}

/// A string member of the seal object, or [`SealError::Malformed`] naming it.
fn str_member<'a>(seal: &'a Value, name: &'static str) -> Result<&'a str, SealError> {
    seal.get(name)
        .and_then(Value::as_str)
        .ok_or(SealError::Malformed(name))
}

/// Text for publishing the verifying key: `<alg> <key_id> <base64 public key>\n`, where alg
/// is `ed25519` or `sm2-sm3` (SM2 keys: 65-byte uncompressed SEC1 point; signatures use the
/// default user ID `1234567812345678`).
pub fn public_key_file_contents(signer: &dyn Signer) -> String {
    format!(
        "{} {} {}\n",
        signer.alg().name(),
        signer.key_id(),
        BASE64_STANDARD.encode(signer.public_key())
    )
}

/// Parses [`public_key_file_contents`] output (blank lines and `#` comments allowed);
/// checks the key's length (and, for SM2, that it is a curve point) and that the key id
/// matches the key.
pub fn parse_public_key_file(text: &str) -> Result<PublicKey, SealError> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |reason: String| SealError::BadPublicKeyFile {
            line: line_no,
            reason,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if found.is_some() {
            return Err(bad("more than one key in the file".into()));
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [alg, key_id, key_b64] = parts[..] else {
            return Err(bad(format!(
                "expected \"<alg> <key_id> <base64 key>\", found {} fields",
                parts.len()
            )));
        };
        let alg = Alg::from_name(alg).ok_or_else(|| {
            bad(format!(
                "algorithm {alg:?} is not supported (expected \"ed25519\" or \"sm2-sm3\")"
            ))
        })?;
        let key = BASE64_STANDARD
            .decode(key_b64)
            .map_err(|e| bad(format!("public key is not base64: {e}")))?;
        let key = PublicKey::new(alg, key).map_err(bad)?;
        if key_id != key.key_id() {
            return Err(bad(format!(
                "key id {key_id} does not match the key (expected {})",
                key.key_id()
            )));
        }
        found = Some(key);
    }
    found.ok_or(SealError::BadPublicKeyFile {
        line: 0,
        reason: "no key in the file".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signer() -> (tempfile::TempDir, Ed25519Signer) {
        let dir = tempfile::tempdir().unwrap();
        let signer = Ed25519Signer::load_or_create(&dir.path().join("keys/seal.key")).unwrap();
        (dir, signer)
    }

    fn doc() -> Value {
        json!({
            "dataset": "household",
            "dataset_version": 7,
            "record": {"name": "阿依古丽", "id": "6501********1234", "tags": ["a", "b"], "score": 1.5},
            "masked": null,
            "ok": true
        })
    }

    #[test]
    fn seal_then_verify() {
        let (_dir, signer) = signer();
        let mut d = doc();
        seal(&signer, &mut d);
        assert_eq!(d["seal"]["alg"], "ed25519");
        assert_eq!(d["seal"]["key_id"], signer.key_id());
        verify(&signer.verifying_key(), &d).unwrap();
        // Resealing replaces the seal rather than signing over it.
        seal(&signer, &mut d);
        verify(&signer.verifying_key(), &d).unwrap();
    }

    #[test]
    fn any_change_breaks_the_seal() {
        let (_dir, signer) = signer();
        let mut sealed = doc();
        seal(&signer, &mut sealed);
        let pk = signer.verifying_key();
        type Edit = Box<dyn Fn(&mut Value)>;
        let edits: Vec<Edit> = vec![
            Box::new(|d| d["dataset_version"] = json!(8)),
            Box::new(|d| d["record"]["name"] = json!("阿依古丽 ")),
            Box::new(|d| d["record"]["tags"][1] = json!("c")),
            Box::new(|d| d["record"]["score"] = json!(1.25)),
            Box::new(|d| d["ok"] = json!(false)),
            Box::new(|d| d["masked"] = json!("")),
            Box::new(|d| d["extra"] = json!(1)),
            Box::new(|d| d["record"]["extra"] = json!(null)),
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("masked");
            }),
            Box::new(|d| {
                d["record"].as_object_mut().unwrap().remove("tags");
            }),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut d = sealed.clone();
            edit(&mut d);
            assert!(
                matches!(verify(&pk, &d), Err(SealError::BadSignature)),
                "edit {i} not detected"
            );
        }
    }

    #[test]
    fn key_order_does_not_matter() {
        let (_dir, signer) = signer();
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":3}],"x":"z"},"c":null}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"c":null,"a":{"x":"z","y":[1,{"p":3,"q":2}]},"b":1}"#)
                .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            br#"{"a":{"x":"z","y":[1,{"p":3,"q":2}]},"b":1,"c":null}"#
        );
        let mut sealed = a;
        seal(&signer, &mut sealed);
        // Move the seal onto the differently ordered document.
        let mut other = b;
        other["seal"] = sealed["seal"].clone();
        verify(&signer.verifying_key(), &other).unwrap();
    }

    #[test]
    fn canonical_strings_use_json_escaping() {
        let v = json!({"k\"ey": "line\nbreak\u{1}\\ 中文", "n": -0.5, "i": 12345678901234i64});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"i":12345678901234,"k\"ey":"line\nbreak\u0001\\ 中文","n":-0.5}"#
        );
    }

    #[test]
    fn clear_verification_errors() {
        let (_dir, signer) = signer();
        let pk = signer.verifying_key();
        assert!(matches!(verify(&pk, &doc()), Err(SealError::NoSeal)));
        assert!(matches!(
            verify(&pk, &json!([1])),
            Err(SealError::NotAnObject)
        ));
        let mut d = doc();
        seal(&signer, &mut d);

        let mut wrong_alg = d.clone();
        wrong_alg["seal"]["alg"] = json!("rsa");
        assert!(matches!(
            verify(&pk, &wrong_alg),
            Err(SealError::WrongAlg { .. })
        ));
        let mut bad_b64 = d.clone();
        bad_b64["seal"]["signature"] = json!("not base64!");
        assert!(matches!(
            verify(&pk, &bad_b64),
            Err(SealError::BadBase64(_))
        ));
        let mut no_sig = d.clone();
        no_sig["seal"].as_object_mut().unwrap().remove("signature");
        assert!(matches!(
            verify(&pk, &no_sig),
            Err(SealError::Malformed("signature"))
        ));

        let other_dir = tempfile::tempdir().unwrap();
        let other = Ed25519Signer::load_or_create(&other_dir.path().join("k")).unwrap();
        let err = verify(&other.verifying_key(), &d).unwrap_err();
        assert!(matches!(err, SealError::KeyIdMismatch { .. }), "{err}");
        assert!(err.to_string().contains(signer.key_id()));
    }

    #[test]
    fn raw_signatures_verify_only_for_the_signed_bytes() {
        let (_dir, signer) = signer();
        let sig = signer.sign(b"message");
        let key = signer.verifying_key();
        key.verify_signature(b"message", &sig).unwrap();
        assert!(matches!(
            key.verify_signature(b"messagE", &sig),
            Err(SealError::BadSignature)
        ));
        let zero = PublicKey::new(Alg::Ed25519, vec![0u8; 32]).unwrap();
        assert!(zero.verify_signature(b"message", &sig).is_err());
        assert!(key.verify_signature(b"message", &sig[..63]).is_err());
    }

    #[test]
    fn load_or_create_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/seal.key");
        let first = Ed25519Signer::load_or_create(&path).unwrap();
        let second = Ed25519Signer::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.key_id().len(), 16);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(fs::read_dir(dir.path().join("a/b")).unwrap().count() == 1);

        fs::write(&path, "garbage").unwrap();
        let err = Ed25519Signer::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("seal.key"), "{err}");
    }

    #[test]
    fn public_key_file_round_trip() {
        let (_dir, signer) = signer();
        let text = public_key_file_contents(&signer);
        assert!(text.starts_with(&format!("ed25519 {} ", signer.key_id())));
        let key = parse_public_key_file(&format!("# broker seal key\n\n{text}")).unwrap();
        assert_eq!(key.key_id(), signer.key_id());
        assert_eq!(key.bytes(), signer.public_key());
        assert_eq!(key.alg(), Alg::Ed25519);

        let mut d = doc();
        seal(&signer, &mut d);
        verify(&key, &d).unwrap();

        let tampered = text.replacen(signer.key_id(), "0000000000000000", 1);
        assert!(parse_public_key_file(&tampered).is_err());
        assert!(parse_public_key_file("").is_err());
        assert!(parse_public_key_file("rsa abc def\n").is_err());
        assert!(parse_public_key_file(&format!("{text}{text}")).is_err());
    }

    #[test]
    fn sm2_seals_verify_and_detect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let signer = load_or_create(Alg::Sm2Sm3, &dir.path().join("seal-key-sm2.pk8")).unwrap();
        let mut d = doc();
        seal(signer.as_ref(), &mut d);
        assert_eq!(d["seal"]["alg"], "sm2-sm3");
        assert_eq!(
            BASE64_STANDARD
                .decode(d["seal"]["signature"].as_str().unwrap())
                .unwrap()
                .len(),
            64
        );
        let text = public_key_file_contents(signer.as_ref());
        assert!(
            text.starts_with(&format!("sm2-sm3 {} ", signer.key_id())),
            "{text}"
        );
        let key = parse_public_key_file(&text).unwrap();
        assert_eq!(key.alg(), Alg::Sm2Sm3);
        verify(&key, &d).unwrap();
        let mut tampered = d.clone();
        tampered["record"]["name"] = json!("someone else");
        assert!(matches!(
            verify(&key, &tampered),
            Err(SealError::BadSignature)
        ));
        // An Ed25519 key refuses an SM2 seal by name, and the other way round.
        let (_ed_dir, ed) = signer_pair();
        let err = verify(&ed.verifying_key(), &d).unwrap_err();
        assert!(err.to_string().contains("\"sm2-sm3\""), "{err}");
        let mut e = doc();
        seal(&ed, &mut e);
        assert!(matches!(verify(&key, &e), Err(SealError::WrongAlg { .. })));
    }

    fn signer_pair() -> (tempfile::TempDir, Ed25519Signer) {
        signer()
    }

    #[test]
    fn published_sm2_keys_are_checked() {
        let bad_point = format!(
            "sm2-sm3 {} {}\n",
            key_id_of(&[4u8; 65]),
            BASE64_STANDARD.encode([4u8; 65])
        );
        let err = parse_public_key_file(&bad_point).unwrap_err().to_string();
        assert!(err.contains("not a point on the sm2 curve"), "{err}");
        let short = format!(
            "sm2-sm3 {} {}\n",
            key_id_of(&[4u8; 32]),
            BASE64_STANDARD.encode([4u8; 32])
        );
        let err = parse_public_key_file(&short).unwrap_err().to_string();
        assert!(err.contains("65-byte"), "{err}");
        let err = parse_public_key_file("sm2 a b\n").unwrap_err().to_string();
        assert!(err.contains("\"sm2\" is not supported"), "{err}");
    }

    /// What every [`Signer`] must do (the contract suite each implementation runs): its key id
    /// is derived from its key, its published key parses back to the same verifying key, its
    /// signatures verify over exactly the signed bytes, and both seal forms verify.
    fn signer_contract(signer: &dyn Signer) {
        assert_eq!(signer.key_id(), key_id_of(&signer.public_key()));
        let key = signer.verifying_key();
        assert_eq!(
            parse_public_key_file(&public_key_file_contents(signer)).unwrap(),
            key
        );
        let sig = signer.sign(b"contract");
        key.verify_signature(b"contract", &sig).unwrap();
        assert!(key.verify_signature(b"contracT", &sig).is_err());
        assert!(key.verify_signature(b"contract", &[]).is_err());
        let mut d = doc();
        seal(signer, &mut d);
        verify(&key, &d).unwrap();
        let mut d = doc();
        let sha = {
            let mut out = [0u8; 32];
            out.copy_from_slice(digest(&SHA256, &canonical_json(&d)).as_ref());
            out
        };
        let signed = batch::SignedBatch::sign([batch::leaf(3, &sha)], 4, &[0; 32], signer);
        d["audit_entry"] = serde_json::json!(3);
        batch::BatchSeal {
            batch: std::sync::Arc::new(signed),
            leaf_index: 0,
        }
        .apply(&mut d);
        verify(&key, &d).unwrap();
    }

    #[test]
    fn every_signer_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        for alg in Alg::ALL {
            let signer = load_or_create(alg, &dir.path().join(alg.name())).unwrap();
            assert_eq!(signer.alg(), alg);
            signer_contract(signer.as_ref());
        }
    }
}
