//! What every value of a decoded frame adds to a profile: missing, typed (integral or not),
//! counted and bounded. Unlike the sketches, which see a sample of rows past a window's first
//! ones, these counts see every value, so on a large input they are most of monitoring's cost.

use super::profile::FeatureProfile;

/// What a frame's values of one place in a row came to: counted in a small contiguous
/// array while the rows are walked, then added to the feature's profile once per frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    missing: u64,
    numbers: u64,
    fractional: u64,
    finite: u64,
    min: f64,
    max: f64,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            missing: 0,
            numbers: 0,
            fractional: 0,
            finite: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// Whether a number has no fraction, without `f64::trunc`, which is a libm call on this
/// target.
#[inline]
pub(super) fn integral(x: f64) -> bool {
    if x.abs() < 4.5e15 {
        x == (x as i64) as f64
    } else {
        x.is_finite()
    }
}

/// A row-major numeric input's values, row by row (the order they sit in memory), each
/// counted for the place it holds in the row, then added to the feature owning the place.
pub(super) fn count_rows<T: Copy>(
    features: &mut [FeatureProfile],
    owners: &[Option<usize>],
    seen: &mut Vec<Seen>,
    v: &[T],
    rows: usize,
    to_f64: impl Fn(T) -> f64,
) {
    let w = owners.len().max(1);
    if rows < FEW_ROWS {
        // An online request's row or few: straight into the features, as clearing and
        // adding up a place array would cost more than the values.
        for row in v.chunks_exact(w).take(rows) {
            for (&x, owner) in row.iter().zip(owners) {
                if let Some(f) = owner.and_then(|o| features.get_mut(o)) {
                    let x = to_f64(x);
                    f.see(x, !x.is_nan() && !integral(x));
                }
            }
        }
        return;
    }
    seen.clear();
    seen.resize(w, Seen::default());
    for row in v.chunks_exact(w).take(rows) {
        for (s, &x) in seen.iter_mut().zip(row) {
            let x = to_f64(x);
            if x.is_nan() {
                s.missing += 1;
            } else {
                s.numbers += 1;
                s.fractional += u64::from(!integral(x));
                if x.is_finite() {
                    s.finite += 1;
                    s.min = s.min.min(x);
                    s.max = s.max.max(x);
                }
            }
        }
    }
    add(features, owners, seen);
}

/// Rows counted per block in lanes of u32 (a block's counts cannot overflow them).
const BLOCK_ROWS: usize = 1 << 16;
/// Frames with fewer rows (online requests) are counted straight into the features: setting
/// up lanes or a place array costs more than the branches it saves.
const FEW_ROWS: usize = 8;
/// From 2^23 up every f32 is a whole number.
const WHOLE_F32: f32 = 8_388_608.0;

/// `count_rows` for float32 inputs (most tabular models), with the same results. The branches
/// of `count_rows` depend on every value and were most of the cost of monitoring a large
/// input; here every value takes the same straight-line steps into per-place lanes, which
/// the compiler turns into vector instructions over a row's places.
pub(super) fn count_rows_f32(
    features: &mut [FeatureProfile],
    owners: &[Option<usize>],
    seen: &mut Vec<Seen>,
    v: &[f32],
    rows: usize,
) {
    let w = owners.len().max(1);
    let rows = rows.min(v.len() / w);
    if rows < FEW_ROWS {
        return count_rows(features, owners, seen, v, rows, f64::from);
    }
    seen.clear();
    seen.resize(w, Seen::default());
    let (mut missing, mut fractional, mut finite) = (vec![0u32; w], vec![0u32; w], vec![0u32; w]);
    let (mut lo, mut hi) = (vec![0f32; w], vec![0f32; w]);
    for block in v[..rows * w].chunks(w * BLOCK_ROWS) {
        missing.fill(0);
        fractional.fill(0);
        finite.fill(0);
        lo.fill(f32::INFINITY);
        hi.fill(f32::NEG_INFINITY);
        for row in block.chunks_exact(w) {
            let (row, missing, fractional) = (&row[..w], &mut missing[..w], &mut fractional[..w]);
            let (finite, lo, hi) = (&mut finite[..w], &mut lo[..w], &mut hi[..w]);
            for j in 0..w {
                let x = row[j];
                let a = x.abs();
                let nan = x.is_nan();
                let fin = a <= f32::MAX;
                // Below 2^23, adding 2^23 rounds to a whole number, which is exact to take
                // away again: a value is whole when it comes back unchanged.
                let whole = if a < WHOLE_F32 {
                    (a + WHOLE_F32) - WHOLE_F32 == a
                } else {
                    fin
                };
                missing[j] += u32::from(nan);
                fractional[j] += u32::from(!nan & !whole);
                finite[j] += u32::from(fin);
                let (x_lo, x_hi) = if fin {
                    (x, x)
                } else {
                    (f32::INFINITY, f32::NEG_INFINITY)
                };
                lo[j] = if x_lo < lo[j] { x_lo } else { lo[j] };
                hi[j] = if x_hi > hi[j] { x_hi } else { hi[j] };
            }
        }
        let n = (block.len() / w) as u64;
        for (j, s) in seen.iter_mut().enumerate() {
            s.missing += u64::from(missing[j]);
            s.numbers += n - u64::from(missing[j]);
            s.fractional += u64::from(fractional[j]);
            s.finite += u64::from(finite[j]);
            s.min = s.min.min(f64::from(lo[j]));
            s.max = s.max.max(f64::from(hi[j]));
        }
    }
    add(features, owners, seen);
}

/// Each place's counts added to the feature owning it.
fn add(features: &mut [FeatureProfile], owners: &[Option<usize>], seen: &[Seen]) {
    for (s, owner) in seen.iter().zip(owners) {
        if let Some(f) = owner.and_then(|o| features.get_mut(o)) {
            f.missing += s.missing;
            f.numbers += s.numbers;
            f.fractional += s.fractional;
            f.integral += s.numbers - s.fractional;
            if s.finite > 0 {
                let m = &mut f.moments;
                if m.n == 0 {
                    (m.min, m.max) = (s.min, s.max);
                } else {
                    (m.min, m.max) = (m.min.min(s.min), m.max.max(s.max));
                }
                m.n += s.finite;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn profiles(w: usize) -> Vec<FeatureProfile> {
        (0..w)
            .map(|i| FeatureProfile::new(format!("f{i}"), None))
            .collect()
    }

    /// What a feature's counts came to, for comparing the two ways of counting.
    fn counts(fs: &[FeatureProfile]) -> Vec<(u64, u64, u64, u64, u64, f64, f64)> {
        fs.iter()
            .map(|f| {
                let m = &f.moments;
                let (lo, hi) = if m.n > 0 { (m.min, m.max) } else { (0.0, 0.0) };
                (f.missing, f.numbers, f.integral, f.fractional, m.n, lo, hi)
            })
            .collect()
    }

    /// Values that exercise every branch of the generic count: NaN, infinities, zeros of
    /// both signs, whole and fractional numbers on both sides of 2^23 and 2^24, subnormals.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            3 => -1000.0f32..1000.0,
            2 => (-100_000i32..100_000).prop_map(|i| i as f32),
            1 => (-(1i32 << 25)..(1 << 25)).prop_map(|i| i as f32 + 0.5),
            1 => prop::sample::select(vec![
                f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 8_388_607.5,
                8_388_608.0, 16_777_217.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE,
                1.0e-45, -0.5, 0.5, 1.5, 2.5,
            ]),
            1 => any::<f32>(),
        ]
    }

    proptest! {
        /// The vectorized count, the generic one and the one for a few rows agree on every
        /// kind of value, with places that no feature owns and a trailing partial row.
        #[test]
        fn f32_lanes_count_as_the_generic_loop_does(
            w in 1usize..12,
            values in prop::collection::vec(value(), 0..400),
            unowned in any::<prop::sample::Index>(),
        ) {
            let mut owners: Vec<Option<usize>> = (0..w).map(Some).collect();
            owners[unowned.index(w)] = None;
            let rows = values.len() / w;
            let (mut a, mut b) = (profiles(w), profiles(w));
            let mut seen = Vec::new();
            count_rows_f32(&mut a, &owners, &mut seen, &values, rows);
            count_rows(&mut b, &owners, &mut seen, &values, rows, f64::from);
            prop_assert_eq!(counts(&a), counts(&b));
            // Row by row, as online requests come: the direct path for a few rows.
            let mut c = profiles(w);
            for row in values.chunks_exact(w) {
                count_rows_f32(&mut c, &owners, &mut seen, row, 1);
            }
            prop_assert_eq!(counts(&c), counts(&b));
        }
    }

    #[test]
    fn blocks_add_up_past_the_lane_size() {
        // Two blocks and a bit: the lanes' u32 counts are carried into u64 each block.
        let rows = BLOCK_ROWS * 2 + 3;
        let values: Vec<f32> = (0..rows * 2)
            .map(|i| match i % 4 {
                0 => f32::NAN,
                1 => i as f32,
                2 => i as f32 + 0.25,
                _ => -(i as f32),
            })
            .collect();
        let owners = [Some(0), Some(1)];
        let (mut a, mut b) = (profiles(2), profiles(2));
        let mut seen = Vec::new();
        count_rows_f32(&mut a, &owners, &mut seen, &values, rows);
        count_rows(&mut b, &owners, &mut seen, &values, rows, f64::from);
        assert_eq!(counts(&a), counts(&b));
        assert_eq!(a[0].missing, (rows / 2 + 1) as u64);
        assert_eq!(a[0].fractional, (rows / 2) as u64);
        assert_eq!((a[1].missing, a[1].fractional), (0, 0));
        assert_eq!(a[1].integral, rows as u64);
    }
}
