//! The streaming line cutter (`codec::lines::LineCutter`, used by `http::chunked` for Batch
//! Transform bodies) fed arbitrary bytes in arbitrary chunks. It must agree with a plain scan
//! of the whole body: the same end of the last whole line after every chunk, and the same
//! refusal (the same line) for the first record longer than the limit, however the body is
//! cut into chunks.
//!
//! Input: byte 0 picks the line ends (low bit: CSV's `\n`/`\r\n`/`\r`, else JSON Lines' `\n`)
//! and byte 1 the record limit (0..=63 bytes); byte 2 seeds the chunk sizes; the rest is the
//! body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlapp::codec::lines::{LineCutter, LineEnds};

/// What a plain scan of `body` says: the offset past the last line end, and the line of the
/// first record over `max` bytes, if one is (a record open at the end counts).
fn scan(body: &[u8], ends: LineEnds, max: usize) -> (u64, Option<u64>) {
    let mut last_end = 0usize;
    let mut lines = 0u64;
    for (p, &b) in body.iter().enumerate() {
        let is_end = b == b'\n' || (ends == LineEnds::LfOrCr && b == b'\r');
        if !is_end {
            continue;
        }
        if p - last_end > max {
            return (last_end as u64, Some(lines + 1));
        }
        let crlf = b == b'\n' && p > 0 && body[p - 1] == b'\r' && ends == LineEnds::LfOrCr;
        lines += u64::from(!crlf);
        last_end = p + 1;
    }
    if body.len() - last_end > max {
        return (last_end as u64, Some(lines + 1));
    }
    (last_end as u64, None)
}

fuzz_target!(|data: &[u8]| {
    let [kind, limit, seed, body @ ..] = data else {
        return;
    };
    let ends = if kind & 1 == 1 {
        LineEnds::LfOrCr
    } else {
        LineEnds::Lf
    };
    let max = usize::from(limit % 64);
    let mut cutter = LineCutter::new(ends, max);
    let mut fed = 0usize;
    let mut step = usize::from(*seed);
    while fed < body.len() {
        // Chunk sizes from 1 to 16 bytes, varied by a small LCG over the seed.
        step = (step * 73 + 41) % 251;
        let n = (1 + step % 16).min(body.len() - fed);
        let chunk = &body[fed..fed + n];
        fed += n;
        let (want_end, want_refusal) = scan(&body[..fed], ends, max);
        match cutter.feed(chunk) {
            Ok(end) => {
                assert_eq!(want_refusal, None, "a record over {max} bytes was let through");
                assert_eq!(end, want_end, "end of the last whole line after {fed} bytes");
            }
            Err(e) => {
                assert_eq!(Some(e.line), want_refusal, "{e}");
                assert_eq!(e.limit, max);
                return;
            }
        }
    }
});
