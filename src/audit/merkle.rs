//! RFC 6962 Merkle tree hashing: leaf and node hashes, tree roots, and an incremental root.

use ring::digest::{Context, SHA256, digest};

/// Hash of one leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_array(ctx.finish().as_ref())
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
}
