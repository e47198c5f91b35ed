//! Batch seals: one signature per audit group commit instead of one per response.
//!
//! For each batch the audit writer makes durable, it builds an RFC 6962 Merkle tree over
//! one leaf per sealed response of the batch and signs, once,
//!
//! ```text
//! sharebroker-batch-seal-v1\n{batch_size}\n{batch_root_hex}\n{log_size}\n{log_root_hex}\n{time}\n
//! ```
//!
//! where `log_size` / `log_root` are the audit log's tree head right after the batch (so the
//! same signature is also a signed tree head an auditor can hold the log to with inclusion
//! and consistency proofs). The leaf of a response is
//!
//! ```text
//! leaf = SHA-256(0x00 || u64_be(audit_entry) || SHA-256(canonical response))
//! ```
//!
//! where "canonical response" is [`super::canonical_json`] of the response body without its
//! `seal` member and without its `audit_entry` number (`meta.audit_entry` when the body has a
//! `meta` object, else the top-level `audit_entry`): exactly the `response_sha256` the audit
//! entry records. The entry number enters the leaf itself, so it is bound too.
//!
//! Each response carries what a verifier needs offline: `type: "batch"`, `alg`, `key_id`,
//! `batch_size`, `leaf_index`, `path` (hex sibling hashes, RFC 9162 audit path), `log_size`,
//! `log_root`, `time` and `signature`. The verifier recomputes the leaf, walks the path to the
//! batch root, rebuilds the message and checks the signature with the published key.

use std::io::Write as _;
use std::sync::Arc;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use super::{PublicKey, SEAL_KEY, SealError, Signer, str_member};
use crate::audit::merkle::{self, MerkleTree};

/// The seal's `type` member for batch seals (per-response seals have none).
pub const SEAL_TYPE: &str = "batch";
/// First line of every signed batch message; names the format version.
pub const BATCH_SEAL_CONTEXT: &str = "sharebroker-batch-seal-v1";
/// Name of the entry-number member that is left out of the response hash.
pub const AUDIT_ENTRY_KEY: &str = "audit_entry";

/// Leaf of one response: `SHA-256(0x00 || u64_be(audit_entry) || response_sha256)`.
pub fn leaf(audit_entry: u64, response_sha256: &[u8; 32]) -> [u8; 32] {
    let mut data = [0u8; 40];
    data[..8].copy_from_slice(&audit_entry.to_be_bytes());
    data[8..].copy_from_slice(response_sha256);
    merkle::leaf_hash(&data)
}

/// The exact bytes a batch signature covers.
pub fn message(
    batch_size: u64,
    batch_root: &[u8; 32],
    log_size: u64,
    log_root: &[u8; 32],
    time: &str,
) -> Vec<u8> {
    format!(
        "{BATCH_SEAL_CONTEXT}\n{batch_size}\n{}\n{log_size}\n{}\n{time}\n",
        hex::encode(batch_root),
        hex::encode(log_root)
    )
    .into_bytes()
}

/// One signed batch, shared (behind an `Arc`) by every response sealed in it.
pub struct SignedBatch {
    tree: MerkleTree,
    log_size: u64,
    log_root_hex: String,
    time: String,
    alg: &'static str,
    key_id: String,
    signature_b64: String,
    /// The members every seal of the batch shares, as JSON: `{"alg":…,"type":"batch"`
    /// without the closing brace. Written once per batch by [`SignedBatch::sign`].
    shared_json: Vec<u8>,
}

impl std::fmt::Debug for SignedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedBatch")
            .field("size", &self.tree.size())
            .field("log_size", &self.log_size)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl SignedBatch {
    /// Builds the tree over `leaves` (from [`leaf`], in batch order) and signs it, with the
    /// log's tree head after the batch, at the current time. `leaves` must not be empty.
    pub fn sign(
        leaves: impl IntoIterator<Item = [u8; 32]>,
        log_size: u64,
        log_root: &[u8; 32],
        signer: &dyn Signer,
    ) -> SignedBatch {
        let mut tree = MerkleTree::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        debug_assert!(tree.size() > 0, "a signed batch has at least one leaf");
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let msg = message(tree.size(), &tree.root(), log_size, log_root, &time);
        let mut batch = SignedBatch {
            log_size,
            log_root_hex: hex::encode(log_root),
            alg: signer.alg().name(),
            key_id: signer.key_id().to_string(),
            signature_b64: BASE64_STANDARD.encode(signer.sign(&msg)),
            tree,
            time,
            shared_json: Vec::new(),
        };
        batch.shared_json = batch.shared_members_json();
        batch
    }

    /// `{` and the members of [`SignedBatch::seal_json`] that do not depend on the response.
    fn shared_members_json(&self) -> Vec<u8> {
        let shared = json!({
            "type": SEAL_TYPE,
            "alg": self.alg,
            "key_id": self.key_id,
            "batch_size": self.tree.size(),
            "log_size": self.log_size,
            "log_root": self.log_root_hex,
            "time": self.time,
            "signature": self.signature_b64,
        });
        let mut out = serde_json::to_vec(&shared).expect("a JSON value serialises");
        out.pop(); // the closing brace: the response's own members follow
        out
    }

    /// Number of responses sealed by this batch.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// [`SignedBatch::seal_json`] written as JSON onto `out`, without building a value: the
    /// members shared by the batch (serialised once), then `leaf_index` and `path`.
    pub fn write_seal_json(&self, leaf_index: u64, out: &mut Vec<u8>) {
        let path = self
            .tree
            .inclusion_proof(leaf_index, self.tree.size())
            .expect("leaf_index was assigned from this batch's leaves");
        out.reserve(self.shared_json.len() + 40 + path.len() * 67);
        out.extend_from_slice(&self.shared_json);
        let _ = write!(out, ",\"leaf_index\":{leaf_index},\"path\":[");
        let mut hex = [0u8; 64];
        for (i, hash) in path.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            hex::encode_to_slice(hash, &mut hex).expect("64 hex digits for 32 bytes");
            out.push(b'"');
            out.extend_from_slice(&hex);
            out.push(b'"');
        }
        out.extend_from_slice(b"]}");
    }

    /// The `seal` member for the response at `leaf_index`, with its inclusion path.
    pub fn seal_json(&self, leaf_index: u64) -> Value {
        let path: Vec<String> = self
            .tree
            .inclusion_proof(leaf_index, self.tree.size())
            .expect("leaf_index was assigned from this batch's leaves")
            .iter()
            .map(hex::encode)
            .collect();
        json!({
            "type": SEAL_TYPE,
            "alg": self.alg,
            "key_id": self.key_id,
            "batch_size": self.tree.size(),
            "leaf_index": leaf_index,
            "path": path,
            "log_size": self.log_size,
            "log_root": self.log_root_hex,
            "time": self.time,
            "signature": self.signature_b64,
        })
    }
}

/// What the audit log hands back to a caller whose append asked for a batch seal: its place
/// in a signed batch.
#[derive(Debug, Clone)]
pub struct BatchSeal {
    pub batch: Arc<SignedBatch>,
    pub leaf_index: u64,
}

impl BatchSeal {
    /// Inserts (replacing any) the `seal` member into `doc`, which must be the response whose
    /// hash was appended, with its `audit_entry` number already set.
    pub fn apply(&self, doc: &mut Value) {
        let Value::Object(map) = doc else {
            debug_assert!(false, "batch seal applied to a non-object json value");
            tracing::error!("batch seal applied to a non-object json value; left unsealed");
            return;
        };
        map.insert(SEAL_KEY.to_string(), self.batch.seal_json(self.leaf_index));
    }
}

/// SHA-256 of the canonical response with `seal` and its `audit_entry` number taken out, and
/// that number. The number sits in `meta.audit_entry` when the body has a `meta` member,
/// otherwise at the top level.
pub fn response_digest(doc: &Value) -> Result<(u64, [u8; 32]), SealError> {
    let mut rest = doc.clone();
    let Value::Object(map) = &mut rest else {
        return Err(SealError::NotAnObject);
    };
    map.remove(SEAL_KEY);
    let number = match map.get_mut("meta") {
        Some(Value::Object(meta)) => meta.remove(AUDIT_ENTRY_KEY),
        Some(_) => return Err(SealError::BadProof("\"meta\" is not an object".into())),
        None => map.remove(AUDIT_ENTRY_KEY),
    };
    let index = number
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or_else(|| SealError::BadProof("the response names no audit_entry number".into()))?;
    let mut sha = [0u8; 32];
    sha.copy_from_slice(digest(&SHA256, &super::canonical_json(&rest)).as_ref());
    Ok((index, sha))
}

fn u64_member(seal: &Value, name: &'static str) -> Result<u64, SealError> {
    seal.get(name)
        .and_then(Value::as_u64)
        .ok_or(SealError::Malformed(name))
}

fn hash_member(seal: &Value, name: &'static str) -> Result<[u8; 32], SealError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(str_member(seal, name)?, &mut out)
        .map_err(|_| SealError::Malformed(name))?;
    Ok(out)
}

/// Verifies a batch-sealed response against the published key (see the module docs).
pub fn verify(key: &PublicKey, doc: &Value) -> Result<(), SealError> {
    let seal = doc.get(SEAL_KEY).ok_or(SealError::NoSeal)?;
    key.check_names(str_member(seal, "alg")?, str_member(seal, "key_id")?)?;
    let batch_size = u64_member(seal, "batch_size")?;
    let leaf_index = u64_member(seal, "leaf_index")?;
    let log_size = u64_member(seal, "log_size")?;
    let log_root = hash_member(seal, "log_root")?;
    let time = str_member(seal, "time")?;
    let path = seal
        .get("path")
        .and_then(Value::as_array)
        .ok_or(SealError::Malformed("path"))?
        .iter()
        .map(|h| {
            let mut out = [0u8; 32];
            h.as_str()
                .and_then(|h| hex::decode_to_slice(h, &mut out).ok())
                .map(|()| out)
                .ok_or(SealError::Malformed("path"))
        })
        .collect::<Result<Vec<[u8; 32]>, SealError>>()?;
    let signature = BASE64_STANDARD
        .decode(str_member(seal, "signature")?)
        .map_err(SealError::BadBase64)?;

    let (index, sha) = response_digest(doc)?;
    if index >= log_size {
        return Err(SealError::BadProof(format!(
            "audit_entry {index} is not within the signed log size {log_size}"
        )));
    }
    let root = merkle::root_from_inclusion(&leaf(index, &sha), leaf_index, batch_size, &path)
        .map_err(|e| SealError::BadProof(e.to_string()))?;
    key.verify_signature(
        &message(batch_size, &root, log_size, &log_root, time),
        &signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, Ed25519Signer, Sm2Signer};

    fn response(i: u64) -> Value {
        json!({
            "data": {"fields": {"name": {"value": format!("阿依古丽 {i}"), "source": "xj-gat"}},
                     "withheld": [{"field": "phone", "reason": "masked by policy"}]},
            "meta": {"dataset_version": 7, "policy_version": "ab".repeat(32)}
        })
    }

    /// Seals `n` responses as the audit writer and the route do: hash before the entry number
    /// is added, leaf with the number, one signature, then the number and the seal inserted.
    fn seal_batch(signer: &dyn Signer, first_index: u64, n: u64) -> Vec<Value> {
        let mut docs: Vec<Value> = (0..n).map(|i| response(first_index + i)).collect();
        let leaves: Vec<[u8; 32]> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut sha = [0u8; 32];
                sha.copy_from_slice(digest(&SHA256, &seal::canonical_json(d)).as_ref());
                leaf(first_index + i as u64, &sha)
            })
            .collect();
        let log_size = first_index + n;
        let batch = Arc::new(SignedBatch::sign(leaves, log_size, &[7u8; 32], signer));
        for (i, d) in docs.iter_mut().enumerate() {
            d["meta"]["audit_entry"] = json!(first_index + i as u64);
            BatchSeal {
                batch: Arc::clone(&batch),
                leaf_index: i as u64,
            }
            .apply(d);
        }
        docs
    }

    fn signers() -> (tempfile::TempDir, Vec<Box<dyn Signer>>) {
        let dir = tempfile::tempdir().unwrap();
        let ed = Ed25519Signer::load_or_create(&dir.path().join("ed")).unwrap();
        let sm = Sm2Signer::load_or_create(&dir.path().join("sm")).unwrap();
        (dir, vec![Box::new(ed), Box::new(sm)])
    }

    #[test]
    fn every_response_of_every_batch_size_verifies() {
        let (_dir, signers) = signers();
        for signer in &signers {
            let key = signer.verifying_key();
            for n in [1u64, 2, 3, 5, 8, 13, 64] {
                for (i, d) in seal_batch(signer.as_ref(), 100, n).iter().enumerate() {
                    seal::verify(&key, d)
                        .unwrap_or_else(|e| panic!("{} n={n} i={i}: {e}", key.alg()));
                    assert_eq!(d["seal"]["batch_size"], n);
                }
            }
        }
    }

    #[test]
    fn a_top_level_entry_number_is_bound_too() {
        let (_dir, signers) = signers();
        let signer = signers[0].as_ref();
        let mut d = json!({"cases": [1, 2]});
        let mut sha = [0u8; 32];
        sha.copy_from_slice(digest(&SHA256, &seal::canonical_json(&d)).as_ref());
        let batch = Arc::new(SignedBatch::sign([leaf(5, &sha)], 6, &[0; 32], signer));
        d["audit_entry"] = json!(5);
        BatchSeal {
            batch,
            leaf_index: 0,
        }
        .apply(&mut d);
        seal::verify(&signer.verifying_key(), &d).unwrap();
        d["audit_entry"] = json!(4);
        assert!(seal::verify(&signer.verifying_key(), &d).is_err());
    }

    #[test]
    fn any_change_breaks_a_batch_seal() {
        let (_dir, signers) = signers();
        for signer in &signers {
            let key = signer.verifying_key();
            let docs = seal_batch(signer.as_ref(), 40, 5);
            let sealed = &docs[2];
            type Edit = Box<dyn Fn(&mut Value)>;
            let edits: Vec<(&str, Edit)> = vec![
                (
                    "value",
                    Box::new(|d| d["data"]["fields"]["name"]["value"] = json!("someone")),
                ),
                ("withheld", Box::new(|d| d["data"]["withheld"] = json!([]))),
                ("extra member", Box::new(|d| d["extra"] = json!(1))),
                (
                    "entry number",
                    Box::new(|d| d["meta"]["audit_entry"] = json!(43)),
                ),
                (
                    "leaf index",
                    Box::new(|d| d["seal"]["leaf_index"] = json!(1)),
                ),
                (
                    "batch size",
                    Box::new(|d| d["seal"]["batch_size"] = json!(6)),
                ),
                (
                    "path",
                    Box::new(|d| d["seal"]["path"][0] = json!("00".repeat(32))),
                ),
                (
                    "short path",
                    Box::new(|d| {
                        d["seal"]["path"].as_array_mut().unwrap().pop();
                    }),
                ),
                ("log size", Box::new(|d| d["seal"]["log_size"] = json!(46))),
                (
                    "log root",
                    Box::new(|d| d["seal"]["log_root"] = json!("08".repeat(32))),
                ),
                (
                    "time",
                    Box::new(|d| d["seal"]["time"] = json!("2020-01-01T00:00:00Z")),
                ),
                (
                    "another response's seal",
                    Box::new({
                        let other = docs[3]["seal"].clone();
                        move |d| d["seal"] = other.clone()
                    }),
                ),
            ];
            for (name, edit) in &edits {
                let mut d = sealed.clone();
                edit(&mut d);
                assert!(
                    seal::verify(&key, &d).is_err(),
                    "{}: edit {name:?} not detected",
                    key.alg()
                );
            }
            // The response's number beyond the signed log size is refused by name.
            let mut d = sealed.clone();
            d["meta"]["audit_entry"] = json!(45);
            let err = seal::verify(&key, &d).unwrap_err();
            assert!(err.to_string().contains("log size"), "{err}");
        }
    }

    #[test]
    fn the_other_algorithm_or_key_is_refused() {
        let (_dir, signers) = signers();
        let docs = seal_batch(signers[0].as_ref(), 0, 3);
        let err = seal::verify(&signers[1].verifying_key(), &docs[0]).unwrap_err();
        assert!(matches!(err, SealError::WrongAlg { .. }), "{err}");
        let other_dir = tempfile::tempdir().unwrap();
        let other = Ed25519Signer::load_or_create(&other_dir.path().join("k")).unwrap();
        let err = seal::verify(&other.verifying_key(), &docs[0]).unwrap_err();
        assert!(matches!(err, SealError::KeyIdMismatch { .. }), "{err}");
        let mut d = docs[0].clone();
        d["seal"]["type"] = json!("tree");
        let err = seal::verify(&signers[0].verifying_key(), &d).unwrap_err();
        assert!(matches!(err, SealError::WrongType(_)), "{err}");
    }

    #[test]
    fn seal_written_as_bytes_is_the_seal_value() {
        let (_dir, signers) = signers();
        for n in [1u64, 2, 3, 7, 16] {
            let leaves = (0..n).map(|i| leaf(40 + i, &[i as u8; 32]));
            let batch = SignedBatch::sign(leaves, 40 + n, &[9u8; 32], signers[0].as_ref());
            for i in 0..n {
                let mut bytes = Vec::new();
                batch.write_seal_json(i, &mut bytes);
                let written: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(written, batch.seal_json(i), "n={n} i={i}");
            }
        }
    }
}
