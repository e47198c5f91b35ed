//! RFC 6962 / RFC 9162 §2.1 Merkle trees: leaf and node hashes, roots, the stored-level
//! [`MerkleTree`] that answers `root_at`, inclusion and consistency proofs in O(log n), and the
//! pure proof verifiers.

use ring::digest::{Context, SHA256, digest};

/// Hash of one leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_array(ctx.finish().as_ref())
}

/// Lower-case hex of a hash, without the per-character iterator of `hex::encode`.
pub fn to_hex(hash: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(hash, &mut out).expect("64 hex digits for 32 bytes");
    String::from_utf8(out.to_vec()).expect("hex digits are ascii")
}

/// Hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(l);
    ctx.update(r);
    to_array(ctx.finish().as_ref())
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> [u8; 32] {
    to_array(digest(&SHA256, b"").as_ref())
}

/// Merkle tree hash (RFC 6962 §2.1) over already-hashed leaves.
pub fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            // k is the largest power of two strictly smaller than n.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Incremental tree: the perfect subtrees along the right edge ("compact range"),
/// so appending and computing the root are O(log n) instead of O(n).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// (subtree root, height), heights strictly decreasing from left to right.
    nodes: Vec<([u8; 32], u32)>,
    size: u64,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.nodes.push((leaf, 0));
        while self.nodes.len() >= 2 {
            let (r, rh) = self.nodes[self.nodes.len() - 1];
            let (l, lh) = self.nodes[self.nodes.len() - 2];
            if lh != rh {
                break;
            }
            self.nodes.truncate(self.nodes.len() - 2);
            self.nodes.push((node_hash(&l, &r), lh + 1));
        }
        self.size += 1;
    }

    /// Root over all leaves appended so far; equals [`root`] over the same leaves.
    pub fn root(&self) -> [u8; 32] {
        let mut iter = self.nodes.iter().rev();
        let Some((last, _)) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, (left, _)| node_hash(left, &acc))
    }
}

/// Why a proof could not be made or does not verify. Both sides share the range errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A tree size larger than the tree (or log) holds.
    #[error("tree size {size} is beyond the {tree_size} leaves held")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    /// Consistency with the empty tree proves nothing; RFC 9162 defines proofs for 0 < old.
    #[error("no consistency proof from the empty tree (old size 0)")]
    OldSizeZero,
    /// The old tree is larger than the new one.
    #[error("old size {old} is larger than new size {new}")]
    OldSizeGreater { old: u64, new: u64 },
    /// A hash (leaf, root or proof component) has the wrong length.
    #[error("{what} is {len} bytes, expected 32")]
    WrongHashLength { what: &'static str, len: usize },
    /// The proof has the wrong number of components for these sizes.
    #[error("proof has {got} hashes, expected {want} for these sizes")]
    WrongProofLength { got: usize, want: usize },
    /// The root recomputed from the proof is not the given root.
    #[error("recomputed root {computed} does not match the given root")]
    RootMismatch { computed: String },
    /// The old root recomputed from a consistency proof is not the given old root.
    #[error("recomputed old root {computed} does not match the given old root")]
    OldRootMismatch { computed: String },
    /// Equal sizes, but the two roots differ.
    #[error("tree sizes are equal but the roots differ")]
    RootsDiffer,
    /// The new root recomputed from a consistency proof is not the given new root.
    #[error("recomputed new root {computed} does not match the given new root")]
    NewRootMismatch { computed: String },
}

/// Every level of complete-subtree hashes: `levels[0]` are the leaf hashes and `levels[k][i]`
/// is the hash of leaves `i * 2^k .. (i + 1) * 2^k`. Appending is amortised O(1) (one node
/// hash per leaf on average); any root, inclusion proof or consistency proof is O(log n)
/// hashes. Memory: about 64 bytes per leaf.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends one leaf hash, completing every subtree it closes.
    pub fn push(&mut self, leaf: [u8; 32]) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// Leaf hash at `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<[u8; 32]> {
        let level = self.levels.first()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| level.get(i).copied())
    }

    /// Root over all leaves.
    pub fn root(&self) -> [u8; 32] {
        self.range_hash(0, self.size())
    }

    /// The right edge of the tree as a [`Frontier`], which appends and computes roots
    /// without touching the stored levels: O(log n).
    pub fn frontier(&self) -> Frontier {
        let size = self.size();
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        // One complete subtree per set bit of the size, largest (leftmost) first.
        for k in (0..u64::BITS).rev().filter(|k| size >> k & 1 == 1) {
            nodes.push((self.levels[k as usize][(start >> k) as usize], k));
            start += 1 << k;
        }
        Frontier { nodes, size }
    }

    /// Root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<[u8; 32], ProofError> {
        self.check_size(size)?;
        Ok(self.range_hash(0, size))
    }

    /// RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::with_capacity(64);
        // PATH(m, D[start..start+n]), unrolled: siblings are collected root-first, then reversed.
        let (mut start, mut n, mut m) = (0u64, size, index);
        while n > 1 {
            let k = split_point(n);
            if m < k {
                proof.push(self.range_hash(start + k, n - k));
                n = k;
            } else {
                proof.push(self.range_hash(start, k));
                start += k;
                n -= k;
                m -= k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// RFC 9162 §2.1.4.1 consistency proof between the trees of `old` and `new` leaves.
    /// Empty when `old == new`; an error for `old == 0`, which proves nothing.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.check_size(new)?;
        if old == 0 {
            return Err(ProofError::OldSizeZero);
        }
        if old > new {
            return Err(ProofError::OldSizeGreater { old, new });
        }
        let mut proof = Vec::with_capacity(64);
        // SUBPROOF(m, D[start..start+n], b), unrolled; collected root-first, then reversed.
        let (mut start, mut n, mut m, mut whole) = (0u64, new, old, true);
        while m != n {
            let k = split_point(n);
            if m <= k {
                proof.push(self.range_hash(start + k, n - k));
                n = k;
            } else {
                proof.push(self.range_hash(start, k));
                start += k;
                n -= k;
                m -= k;
                whole = false;
            }
        }
        if !whole {
            proof.push(self.range_hash(start, n));
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let tree_size = self.size();
        if size > tree_size {
            return Err(ProofError::SizeBeyondTree { size, tree_size });
        }
        Ok(())
    }

    /// MTH of leaves `start..start+len`, where `start` is a multiple of the largest power of
    /// two not above `len` (true of every subtree in RFC 6962's split), from the stored
    /// complete subtrees along the range: O(log len) hashes.
    fn range_hash(&self, start: u64, len: u64) -> [u8; 32] {
        if len == 0 {
            return empty_root();
        }
        // The complete subtrees of the range, largest (leftmost) first, one per set bit of len.
        let mut acc: Option<[u8; 32]> = None;
        let mut end = start + len;
        let mut rest = len;
        while rest != 0 {
            let k = rest.trailing_zeros();
            let size = 1u64 << k;
            end -= size;
            let hash = self.levels[k as usize][(end >> k) as usize];
            acc = Some(match acc {
                None => hash,
                Some(right) => node_hash(&hash, &right),
            });
            rest &= rest - 1;
        }
        acc.unwrap_or_else(empty_root)
    }
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

fn hash32(what: &'static str, bytes: &[u8]) -> Result<[u8; 32], ProofError> {
    bytes.try_into().map_err(|_| ProofError::WrongHashLength {
        what,
        len: bytes.len(),
    })
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2): that the leaf with hash `leaf_hash` is at
/// `index` in the tree of `size` leaves whose root is `root`. Pure; takes byte slices so that
/// a hash of the wrong length is reported rather than unrepresentable.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    let r = root_from_inclusion(leaf_hash, index, size, proof)?;
    if r != hash32("root", root)? {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(r),
        });
    }
    Ok(())
}

/// The root that an inclusion proof leads to from the leaf with hash `leaf_hash` at `index`
/// in a tree of `size` leaves (RFC 9162 §2.1.3.2 without the final comparison): for proofs
/// whose root is only known through a signature over it. Pure.
pub fn root_from_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
) -> Result<[u8; 32], ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = hash32("leaf hash", leaf_hash)?;
    // Levels where the path runs along the right edge have no sibling.
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    let want = (inner + border) as usize;
    if proof.len() != want {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        let p = hash32("proof component", p.as_ref())?;
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(&p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, &p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0, "proof length was checked above");
    Ok(r)
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2): that the tree of `old_size` leaves with
/// root `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`.
/// Equal sizes need an empty proof and equal roots; `old_size == 0` is rejected (it proves
/// nothing, as in the transparency-dev vectors). Pure.
pub fn verify_consistency<P: AsRef<[u8]>>(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[P],
) -> Result<(), ProofError> {
    if old_size == 0 {
        return Err(ProofError::OldSizeZero);
    }
    if old_size > new_size {
        return Err(ProofError::OldSizeGreater {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(ProofError::RootsDiffer);
        }
        return Ok(());
    }
    let old_root = hash32("old root", old_root)?;
    let new_root = hash32("new root", new_root)?;
    // The old tree's rightmost complete subtree has 2^shift leaves; when the old tree is that
    // one subtree the proof omits its hash (the verifier has it as the old root).
    let shift = old_size.trailing_zeros();
    let old_is_subtree = old_size == 1u64 << shift;
    let (fn0, sn0) = ((old_size - 1) >> shift, (new_size - 1) >> shift);
    let inner = u64::BITS - (fn0 ^ sn0).leading_zeros();
    let border = (fn0 >> inner).count_ones();
    let want = usize::from(!old_is_subtree) + (inner + border) as usize;
    if proof.len() != want {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            want,
        });
    }
    let mut path = Vec::with_capacity(want + 1);
    if old_is_subtree {
        path.push(old_root);
    }
    for p in proof {
        path.push(hash32("proof component", p.as_ref())?);
    }
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    debug_assert_eq!(sn, 0, "proof length was checked above");
    if fr != old_root {
        return Err(ProofError::OldRootMismatch {
            computed: hex::encode(fr),
        });
    }
    if sr != new_root {
        return Err(ProofError::NewRootMismatch {
            computed: hex::encode(sr),
        });
    }
    Ok(())
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("sha-256 digests are 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eight leaves of transparency-dev/merkle testonly/constants.go.
    fn leaves() -> Vec<[u8; 32]> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    /// Roots of each prefix 1..=8; sizes 1,2,3,5,6,7,8 also appear as `root`
    /// values in testdata/merkle/transparency_dev_merkle.json (wantErr false).
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Frontier::new().root(), root(&[]));
    }

    #[test]
    fn rfc6962_roots_of_every_prefix() {
        let leaves = leaves();
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..=n])), *want, "size {}", n + 1);
        }
    }

    #[test]
    fn frontier_agrees_with_recursive_root() {
        let mut frontier = Frontier::new();
        let mut all = Vec::new();
        for i in 0u32..70 {
            let leaf = leaf_hash(&i.to_be_bytes());
            frontier.push(leaf);
            all.push(leaf);
            assert_eq!(frontier.root(), root(&all), "size {}", all.len());
            assert_eq!(frontier.size(), all.len() as u64);
        }
    }

    #[test]
    fn a_trees_frontier_continues_it() {
        let mut tree = MerkleTree::new();
        let mut all = Vec::new();
        for i in 0u32..70 {
            // The frontier of the tree so far, extended by three leaves, has the root of all.
            let mut frontier = tree.frontier();
            assert_eq!(frontier.size(), tree.size());
            assert_eq!(frontier.root(), tree.root(), "size {i}");
            let next: Vec<_> = (0..3u32)
                .map(|j| leaf_hash(&(1000 * i + j).to_be_bytes()))
                .collect();
            for leaf in &next {
                frontier.push(*leaf);
            }
            let with_next: Vec<_> = all.iter().chain(&next).copied().collect();
            assert_eq!(frontier.root(), root(&with_next), "size {i} + 3");
            let leaf = leaf_hash(&i.to_be_bytes());
            tree.push(leaf);
            all.push(leaf);
        }
    }

    #[test]
    fn merkle_tree_roots_agree_with_recursive_root() {
        let mut tree = MerkleTree::new();
        let mut all = Vec::new();
        assert_eq!(tree.root(), empty_root());
        for i in 0u32..130 {
            let leaf = leaf_hash(&i.to_be_bytes());
            tree.push(leaf);
            all.push(leaf);
            assert_eq!(tree.root(), root(&all), "size {}", all.len());
            assert_eq!(tree.size(), all.len() as u64);
        }
        for size in 0..=all.len() {
            assert_eq!(tree.root_at(size as u64).unwrap(), root(&all[..size]));
        }
        assert_eq!(tree.leaf(129), Some(all[129]));
        assert_eq!(tree.leaf(130), None);
        assert_eq!(
            tree.root_at(131),
            Err(ProofError::SizeBeyondTree {
                size: 131,
                tree_size: 130
            })
        );
        // Stored levels: level k holds one hash per complete 2^k-leaf subtree.
        for (k, level) in tree.levels.iter().enumerate() {
            assert_eq!(level.len(), 130 >> k, "level {k}");
        }
    }

    #[test]
    fn eight_leaf_vectors_have_the_published_roots() {
        let mut tree = MerkleTree::new();
        for leaf in leaves() {
            tree.push(leaf);
        }
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(tree.root_at(n as u64 + 1).unwrap()), *want);
        }
    }

    /// PATH(m, D[n]) exactly as RFC 9162 §2.1.3.1 writes it.
    fn reference_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
        let n = leaves.len();
        if n == 1 {
            return Vec::new();
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = reference_path(m, &leaves[..k]);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &leaves[k..]);
            p.push(root(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b) exactly as RFC 9162 §2.1.4.1 writes it.
    fn reference_subproof(m: usize, leaves: &[[u8; 32]], whole: bool) -> Vec<[u8; 32]> {
        let n = leaves.len();
        if m == n {
            return if whole {
                Vec::new()
            } else {
                vec![root(leaves)]
            };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = reference_subproof(m, &leaves[..k], whole);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = reference_subproof(m - k, &leaves[k..], false);
            p.push(root(&leaves[..k]));
            p
        }
    }

    fn tree_of(n: u64) -> (MerkleTree, Vec<[u8; 32]>) {
        let mut tree = MerkleTree::new();
        let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for leaf in &leaves {
            tree.push(*leaf);
        }
        (tree, leaves)
    }

    #[test]
    fn every_inclusion_proof_up_to_64_verifies_and_any_flipped_byte_fails() {
        let (tree, leaves) = tree_of(64);
        for size in 1..=64u64 {
            let root = tree.root_at(size).unwrap();
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                assert_eq!(
                    proof,
                    reference_path(index as usize, &leaves[..size as usize]),
                    "index {index} size {size}"
                );
                let leaf = leaves[index as usize];
                verify_inclusion(&leaf, index, size, &proof, &root)
                    .unwrap_or_else(|e| panic!("index {index} size {size}: {e}"));
                for c in 0..proof.len() {
                    for b in 0..32 {
                        let mut bad = proof.clone();
                        bad[c][b] ^= 0x01;
                        assert!(
                            matches!(
                                verify_inclusion(&leaf, index, size, &bad, &root),
                                Err(ProofError::RootMismatch { .. })
                            ),
                            "index {index} size {size} component {c} byte {b}"
                        );
                    }
                }
                let mut other = leaf;
                other[0] ^= 0x80;
                assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
                if size > 1 {
                    let wrong = (index + 1) % size;
                    assert!(verify_inclusion(&leaf, wrong, size, &proof, &root).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64_verifies_and_any_flipped_byte_fails() {
        let (tree, leaves) = tree_of(64);
        for new in 1..=64u64 {
            let new_root = tree.root_at(new).unwrap();
            for old in 1..=new {
                let old_root = tree.root_at(old).unwrap();
                let proof = tree.consistency_proof(old, new).unwrap();
                assert_eq!(
                    proof,
                    reference_subproof(old as usize, &leaves[..new as usize], true),
                    "old {old} new {new}"
                );
                verify_consistency(old, new, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("old {old} new {new}: {e}"));
                for c in 0..proof.len() {
                    for b in 0..32 {
                        let mut bad = proof.clone();
                        bad[c][b] ^= 0x01;
                        assert!(
                            verify_consistency(old, new, &old_root, &new_root, &bad).is_err(),
                            "old {old} new {new} component {c} byte {b}"
                        );
                    }
                }
                if old < new {
                    assert!(verify_consistency(old, new, &new_root, &old_root, &proof).is_err());
                }
            }
        }
    }

    #[test]
    fn proof_requests_out_of_range_are_refused() {
        let (tree, _) = tree_of(10);
        assert_eq!(
            tree.inclusion_proof(10, 10),
            Err(ProofError::IndexOutOfRange {
                index: 10,
                size: 10
            })
        );
        assert_eq!(
            tree.inclusion_proof(0, 11),
            Err(ProofError::SizeBeyondTree {
                size: 11,
                tree_size: 10
            })
        );
        assert_eq!(tree.consistency_proof(0, 5), Err(ProofError::OldSizeZero));
        assert_eq!(
            tree.consistency_proof(6, 5),
            Err(ProofError::OldSizeGreater { old: 6, new: 5 })
        );
        assert_eq!(tree.consistency_proof(5, 5), Ok(Vec::new()));
        assert!(tree.consistency_proof(5, 11).is_err());
    }

    #[test]
    fn proofs_in_a_larger_tree_verify() {
        let (tree, leaves) = tree_of(100_003);
        let size = tree.size();
        let root = tree.root();
        for index in [0, 1, 65_535, 65_536, 99_999, 100_002] {
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert!(proof.len() <= 17);
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
        for old in [1, 2, 3, 4_096, 65_536, 77_777, 100_002] {
            let proof = tree.consistency_proof(old, size).unwrap();
            let old_root = tree.root_at(old).unwrap();
            verify_consistency(old, size, &old_root, &root, &proof).unwrap();
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InclusionVector {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
        #[serde(rename = "_path")]
        path: String,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsistencyVector {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
        #[serde(rename = "_path")]
        path: String,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        commit: String,
        inclusion: Vec<InclusionVector>,
        consistency: Vec<ConsistencyVector>,
    }

    fn b64(s: &str) -> Vec<u8> {
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        BASE64_STANDARD.decode(s).unwrap()
    }

    fn vectors() -> Vectors {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/merkle/transparency_dev_merkle.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn transparency_dev_inclusion_vectors() {
        let v = vectors();
        assert_eq!(v.commit, "417fb0c314750d94e53942e9f92e79b6d35915db");
        assert!(v.inclusion.len() > 90);
        let (mut accepted, mut rejected) = (0, 0);
        for t in &v.inclusion {
            let proof: Vec<Vec<u8>> = t.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = verify_inclusion(
                &b64(&t.leaf_hash),
                t.leaf_idx,
                t.tree_size,
                &proof,
                &b64(&t.root),
            );
            match (t.want_err, got) {
                (false, Ok(())) => accepted += 1,
                (true, Err(_)) => rejected += 1,
                (want_err, got) => panic!(
                    "{} ({}): want error {want_err}, got {got:?}",
                    t.path, t.desc
                ),
            }
        }
        assert!(accepted >= 6 && rejected >= 80, "{accepted} {rejected}");
    }

    #[test]
    fn transparency_dev_consistency_vectors() {
        let v = vectors();
        assert!(v.consistency.len() > 90);
        let (mut accepted, mut rejected) = (0, 0);
        for t in &v.consistency {
            let proof: Vec<Vec<u8>> = t.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = verify_consistency(t.size1, t.size2, &b64(&t.root1), &b64(&t.root2), &proof);
            match (t.want_err, got) {
                (false, Ok(())) => accepted += 1,
                (true, Err(_)) => rejected += 1,
                (want_err, got) => panic!(
                    "{} ({}): want error {want_err}, got {got:?}",
                    t.path, t.desc
                ),
            }
        }
        assert!(accepted >= 5 && rejected >= 80, "{accepted} {rejected}");
    }

    #[test]
    fn verifier_errors_are_specific() {
        let (tree, leaves) = tree_of(8);
        let root = tree.root();
        let proof = tree.inclusion_proof(5, 8).unwrap();
        assert_eq!(
            verify_inclusion(&leaves[5], 8, 8, &proof, &root),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(
            verify_inclusion(&leaves[5], 5, 8, &proof[..2], &root),
            Err(ProofError::WrongProofLength { got: 2, want: 3 })
        );
        assert_eq!(
            verify_inclusion(&leaves[5][..31], 5, 8, &proof, &root),
            Err(ProofError::WrongHashLength {
                what: "leaf hash",
                len: 31
            })
        );
        let old = tree.root_at(3).unwrap();
        let cproof = tree.consistency_proof(3, 8).unwrap();
        assert!(matches!(
            verify_consistency(3, 8, &root, &root, &cproof),
            Err(ProofError::OldRootMismatch { .. })
        ));
        assert!(matches!(
            verify_consistency(3, 8, &old, &old, &cproof),
            Err(ProofError::NewRootMismatch { .. })
        ));
        assert_eq!(
            verify_consistency(3, 3, &old, &root, &[] as &[[u8; 32]]),
            Err(ProofError::RootsDiffer)
        );
        assert_eq!(
            verify_consistency(0, 3, &old, &root, &[] as &[[u8; 32]]),
            Err(ProofError::OldSizeZero)
        );
    }
}
