//! Floats sorted in `f64::total_cmp` order by their bits, a byte at a time (LSD radix sort).
//!
//! A KLL sketch sorts a level each time it compacts it, and every sampled value passes
//! through a few such sorts: in a server monitoring a large input this was the largest part of
//! monitoring's cost after counting the values. A comparison sort of a few thousand floats
//! takes about a dozen comparisons per item; here it is one pass to count and one per byte
//! that differs between the items, and values read from float32 text leave their low bytes
//! all zero, which are skipped.

/// Below this a comparison sort is quicker than counting 8 × 256 buckets.
const RADIX_FROM: usize = 512;

/// Sorts `v` as `v.sort_by(f64::total_cmp)` would. Items equal in that order have the same
/// bits, so the result is the same whichever sort gives it.
pub(super) fn sort_total(v: &mut [f64]) {
    if v.len() < RADIX_FROM {
        v.sort_unstable_by(f64::total_cmp);
        return;
    }
    let mut keys: Vec<u64> = v.iter().map(|x| key(x.to_bits())).collect();
    let mut counts = vec![[0usize; 256]; 8];
    for &k in &keys {
        for (byte, c) in counts.iter_mut().enumerate() {
            c[digit(k, byte)] += 1;
        }
    }
    let mut other = vec![0u64; keys.len()];
    for (byte, c) in counts.iter().enumerate() {
        // Every key has the same byte here: a pass would leave the order as it is.
        if c.contains(&keys.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut start = 0;
        for (n, &count) in next.iter_mut().zip(c) {
            *n = start;
            start += count;
        }
        for &k in &keys {
            let d = digit(k, byte);
            other[next[d]] = k;
            next[d] += 1;
        }
        std::mem::swap(&mut keys, &mut other);
    }
    for (x, &k) in v.iter_mut().zip(&keys) {
        *x = f64::from_bits(bits(k));
    }
}

#[inline(always)]
fn digit(k: u64, byte: usize) -> usize {
    ((k >> (8 * byte)) & 0xff) as usize
}

/// The bits of a float as an unsigned number in `total_cmp` order: negatives (sign bit set)
/// reversed below the positives.
#[inline]
fn key(bits: u64) -> u64 {
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

#[inline]
fn bits(key: u64) -> u64 {
    if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => (-1000.0f32..1000.0).prop_map(f64::from),
            2 => -1e6f64..1e6,
            1 => (0i32..20).prop_map(f64::from),
            1 => prop::sample::select(vec![
                0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -f64::NAN, f64::MAX,
                f64::MIN, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 5e-324, -5e-324,
            ]),
            1 => any::<f64>(),
        ]
    }

    proptest! {
        /// Bit for bit what the comparison sort gives, on both sides of the radix threshold,
        /// with duplicates, zeros of both signs, infinities and NaNs.
        #[test]
        fn radix_sorts_as_total_cmp_does(v in prop::collection::vec(value(), 0..1500)) {
            let mut want = v.clone();
            want.sort_by(f64::total_cmp);
            let mut got = v;
            sort_total(&mut got);
            let b = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(b(&got), b(&want));
        }
    }

    #[test]
    fn keys_order_as_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -1.5,
            -0.0,
            0.0,
            1e-300,
            2.0,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0].to_bits()) < key(w[1].to_bits()), "{w:?}");
        }
        for x in xs {
            assert_eq!(bits(key(x.to_bits())), x.to_bits());
        }
    }
}
