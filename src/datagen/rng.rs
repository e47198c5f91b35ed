//! Deterministic randomness for the generator: SplitMix64 for seeding and
//! hashing, xoshiro256** for streams, and a keyed Feistel permutation. Our own
//! code, so the byte stream never changes when a dependency is upgraded.

/// One SplitMix64 step: advances `state` and returns the next output.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of two words (SplitMix64 finaliser applied twice).
pub(crate) fn hash2(a: u64, b: u64) -> u64 {
    let mut s = a;
    let h = splitmix64(&mut s);
    let mut t = h ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    splitmix64(&mut t)
}

/// Independent random streams: one per purpose, each indexed by an entity or
/// row number, so generating one record never shifts another's randomness.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    IdPermutation = 1,
    Person = 2,
    Population = 3,
    MarriageChoice = 4,
    Couple = 5,
    MarriageRow = 6,
    SocialInsurance = 7,
    OrgIdentity = 8,
    OrgDetail = 9,
    OrgRepresentative = 10,
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded through SplitMix64, as the xoshiro authors advise.
    pub(crate) fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// The generator for `index` within `stream` under the run's `seed`.
    pub(crate) fn derive(seed: u64, stream: Stream, index: u64) -> Self {
        Rng::new(hash2(hash2(seed, stream as u64), index))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-40 for our
    /// ranges and, more to the point, deterministic). `n == 0` yields 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform index into a slice of length `n`.
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`; `lo` when the range is empty.
    pub(crate) fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    /// A uniformly chosen element.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// An element chosen with a bias towards the front of the list (the
    /// smaller of two uniform draws), for "common first" lists.
    pub(crate) fn pick_common<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let a = self.index(items.len());
        let b = self.index(items.len());
        &items[a.min(b)]
    }

    /// An index chosen with the given integer weights (at least one non-zero).
    pub(crate) fn weighted(&mut self, weights: impl Iterator<Item = u64> + Clone) -> usize {
        let total: u64 = weights.clone().sum();
        let mut x = self.below(total);
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            if x < w {
                return i;
            }
            x -= w;
            last = i;
        }
        last
    }
}

/// A keyed bijection on `0..domain`: a four-round Feistel network on the
/// next even power of two, with cycle walking back into the domain.
#[derive(Debug, Clone)]
pub(crate) struct Permutation {
    domain: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub(crate) fn new(seed: u64, domain: u64) -> Self {
        let bits = 64 - domain.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut rng = Rng::derive(seed, Stream::IdPermutation, domain);
        let keys = [
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
        ];
        Permutation {
            domain,
            half_bits,
            keys,
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in self.keys {
            let f = hash2(key, right) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }

    /// The image of `i`; `i` must be below the domain.
    pub(crate) fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.domain);
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.domain {
                return x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_is_reproducible_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::derive(1, Stream::Person, 5);
        let mut y = Rng::derive(1, Stream::Person, 6);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn permutation_is_a_bijection() {
        for domain in [1u64, 2, 7, 1000, 4097] {
            let p = Permutation::new(42, domain);
            let mut seen = vec![false; domain as usize];
            for i in 0..domain {
                let j = p.apply(i) as usize;
                assert!(!seen[j]);
                seen[j] = true;
            }
        }
    }
}
