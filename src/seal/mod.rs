//! Seals (broker signatures) over JSON responses, verifiable offline with the published key.
//!
//! A seal is `"seal": {"alg":"ed25519","key_id":..,"signature":..}` inside the response object;
//! the signature covers [`canonical_json`] of the object without its `"seal"` member.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::Value;

/// Name of the only algorithm so far.
pub const ALG_ED25519: &str = "ed25519";
/// Key of the seal member inside a sealed document.
pub const SEAL_KEY: &str = "seal";

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

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
    /// A key file exists but does not hold a usable Ed25519 PKCS#8 key.
    #[error("seal key {path} is not a valid ed25519 pkcs#8 key: {reason}")]
    BadKey {
        path: std::path::PathBuf,
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
    /// The seal names an algorithm other than ed25519.
    #[error("seal algorithm {found:?} is not supported (expected \"ed25519\")")]
    WrongAlg { found: String },
    /// The signature is not valid standard base64.
    #[error("seal signature is not valid base64: {0}")]
    BadBase64(#[source] base64::DecodeError),
    /// The seal was made by another key than the one given.
    #[error("seal key id {found} does not match the verifying key {expected}")]
    KeyIdMismatch { expected: String, found: String },
    /// The signature does not verify: the document was altered or the key is wrong.
    #[error("seal signature does not verify (document altered or wrong key)")]
    BadSignature,
    /// A published public key file does not parse.
    #[error("public key file line {line}: {reason}")]
    BadPublicKeyFile { line: usize, reason: String },
}

/// Something that signs seals; `Send + Sync + 'static` so it can live in app state as `Arc<dyn Signer>`.
pub trait Signer: Send + Sync + 'static {
    /// Algorithm name written into the seal ("ed25519").
    fn alg(&self) -> &'static str;
    /// Short id of the key: first 16 hex chars of SHA-256(public key).
    fn key_id(&self) -> &str;
    /// Signature over `msg`.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
    /// Raw public key bytes.
    fn public_key(&self) -> Vec<u8>;
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
        if !path.exists() {
            create_key_file(path)?;
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
        let der = pkcs8_der(&bytes).map_err(|reason| SealError::BadKey {
            path: path.to_path_buf(),
            reason,
        })?;
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| SealError::BadKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Self::from_key_pair(key_pair))
    }

    /// Signer from a PKCS#8 v1 or v2 document (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SealError> {
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| SealError::BadKey {
                path: "<memory>".into(),
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
    fn alg(&self) -> &'static str {
        ALG_ED25519
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
fn create_key_file(path: &Path) -> Result<(), SealError> {
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
    let doc =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SealError::Random)?;
    let pem = to_pem(doc.as_ref());
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

/// Writes `v` canonically; at the top level only, skips the member named `skip`.
fn write_canonical(v: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
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
            let mut members: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != skip)
                .collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in members.into_iter().enumerate() {
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

/// Seals an object in place: removes any old seal, signs the canonical bytes of the rest, and
/// inserts `"seal"`. A non-object document is a programming error: it is left unsealed (and
/// will fail [`verify`]).
pub fn seal(signer: &dyn Signer, doc: &mut Value) {
    let Value::Object(map) = doc else {
        debug_assert!(false, "seal called on a non-object json value");
        tracing::error!("seal called on a non-object json value; response left unsealed");
        return;
    };
    map.remove(SEAL_KEY);
    let signature = signer.sign(&canonical_json(doc));
    let seal = serde_json::json!({
        "alg": signer.alg(),
        "key_id": signer.key_id(),
        "signature": BASE64_STANDARD.encode(signature),
    });
    if let Value::Object(map) = doc {
        map.insert(SEAL_KEY.to_string(), seal);
    }
}

/// Verifies a sealed object against a raw Ed25519 public key.
pub fn verify(public_key: &[u8], doc: &Value) -> Result<(), SealError> {
    let Value::Object(map) = doc else {
        return Err(SealError::NotAnObject);
    };
    let seal = map.get(SEAL_KEY).ok_or(SealError::NoSeal)?;
    let field = |name: &'static str| -> Result<&str, SealError> {
        seal.get(name)
            .and_then(Value::as_str)
            .ok_or(SealError::Malformed(name))
    };
    if !seal.is_object() {
        return Err(SealError::Malformed("seal is not an object"));
    }
    let alg = field("alg")?;
    if alg != ALG_ED25519 {
        return Err(SealError::WrongAlg {
            found: alg.to_string(),
        });
    }
    let expected = key_id_of(public_key);
    let found = field("key_id")?;
    if found != expected {
        return Err(SealError::KeyIdMismatch {
            expected,
            found: found.to_string(),
        });
    }
    let signature = BASE64_STANDARD
        .decode(field("signature")?)
        .map_err(SealError::BadBase64)?;
    let mut msg = Vec::with_capacity(256);
    write_canonical(doc, Some(SEAL_KEY), &mut msg);
    verify_signature(public_key, &msg, &signature)
}

/// Verifies a raw Ed25519 signature over `msg` (the primitive under [`verify`] and the audit
/// log's signed tree heads).
pub fn verify_signature(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), SealError> {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .map_err(|_| SealError::BadSignature)
}

/// Text for publishing the verifying key: `ed25519 <key_id> <base64 public key>\n`.
pub fn public_key_file_contents(signer: &dyn Signer) -> String {
    format!(
        "{} {} {}\n",
        signer.alg(),
        signer.key_id(),
        BASE64_STANDARD.encode(signer.public_key())
    )
}

/// Parses [`public_key_file_contents`] output (blank lines and `#` comments allowed);
/// checks that the key id matches the key. Returns (key id, raw public key).
pub fn parse_public_key_file(text: &str) -> Result<(String, Vec<u8>), SealError> {
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
                "expected \"ed25519 <key_id> <base64 key>\", found {} fields",
                parts.len()
            )));
        };
        if alg != ALG_ED25519 {
            return Err(bad(format!("algorithm {alg:?} is not supported")));
        }
        let key = BASE64_STANDARD
            .decode(key_b64)
            .map_err(|e| bad(format!("public key is not base64: {e}")))?;
        if key.len() != 32 {
            return Err(bad(format!(
                "ed25519 public key must be 32 bytes, found {}",
                key.len()
            )));
        }
        let expected = key_id_of(&key);
        if key_id != expected {
            return Err(bad(format!(
                "key id {key_id} does not match the key (expected {expected})"
            )));
        }
        found = Some((key_id.to_string(), key));
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
        verify(&signer.public_key(), &d).unwrap();
        // Resealing replaces the seal rather than signing over it.
        seal(&signer, &mut d);
        verify(&signer.public_key(), &d).unwrap();
    }

    #[test]
    fn any_change_breaks_the_seal() {
        let (_dir, signer) = signer();
        let mut sealed = doc();
        seal(&signer, &mut sealed);
        let pk = signer.public_key();
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
        verify(&signer.public_key(), &other).unwrap();
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
        let pk = signer.public_key();
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
        let err = verify(&other.public_key(), &d).unwrap_err();
        assert!(matches!(err, SealError::KeyIdMismatch { .. }), "{err}");
        assert!(err.to_string().contains(signer.key_id()));
    }

    #[test]
    fn raw_signatures_verify_only_for_the_signed_bytes() {
        let (_dir, signer) = signer();
        let sig = signer.sign(b"message");
        verify_signature(&signer.public_key(), b"message", &sig).unwrap();
        assert!(matches!(
            verify_signature(&signer.public_key(), b"messagE", &sig),
            Err(SealError::BadSignature)
        ));
        assert!(verify_signature(&[0u8; 32], b"message", &sig).is_err());
        assert!(verify_signature(&signer.public_key(), b"message", &sig[..63]).is_err());
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
        let (key_id, key) = parse_public_key_file(&format!("# broker seal key\n\n{text}")).unwrap();
        assert_eq!(key_id, signer.key_id());
        assert_eq!(key, signer.public_key());

        let mut d = doc();
        seal(&signer, &mut d);
        verify(&key, &d).unwrap();

        let tampered = text.replacen(signer.key_id(), "0000000000000000", 1);
        assert!(parse_public_key_file(&tampered).is_err());
        assert!(parse_public_key_file("").is_err());
        assert!(parse_public_key_file("rsa abc def\n").is_err());
        assert!(parse_public_key_file(&format!("{text}{text}")).is_err());
    }
}
