//! Finding whole records in a line-oriented body as it arrives, for `stream`: each
//! network chunk is searched once (so a long line costs linear time, not a rescan of what is
//! held per chunk), and a record that grows past a limit is refused as soon as it does, so
//! that a body with no line ends is never held whole.

use memchr::{memchr2_iter, memchr_iter};

use super::InputFormat;

/// What ends a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEnds {
    /// `\n` (so `\r\n` too). JSON Lines: a `\r` elsewhere is JSON whitespace inside a record,
    /// and the decoders split on `\n` only, so a CR-only body is one (bad) record there too.
    Lf,
    /// `\n`, `\r\n` or a lone `\r`: CSV, as the csv crate reads a whole body. CR-only files
    /// ("CSV (Macintosh)" from Excel) then get the same answer streamed as read whole.
    LfOrCr,
}

impl LineEnds {
    pub fn of(format: InputFormat) -> Self {
        match format {
            InputFormat::Csv { .. } => Self::LfOrCr,
            InputFormat::JsonLines | InputFormat::Json | InputFormat::Npy => Self::Lf,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the record starting at line {line} is longer than {limit} bytes, the most one record of a \
     streamed body may have ({})",
    match .ends {
        LineEnds::Lf => "a JSON Lines record ends with \\n",
        LineEnds::LfOrCr => "a CSV record ends with \\n, \\r\\n or \\r",
    }
)]
pub struct RecordTooLong {
    /// 1-based line of the body where the record starts.
    pub line: u64,
    pub limit: usize,
    ends: LineEnds,
}

/// Tracks where the last whole line of a body ends, fed the body chunk by chunk.
#[derive(Clone, Debug)]
pub struct LineCutter {
    ends: LineEnds,
    max_record: usize,
    /// Bytes fed so far.
    fed: u64,
    /// Offset just past the last line end fed (0: none yet): where the open record starts.
    last_end: u64,
    /// Line ends before `last_end`.
    lines: u64,
    /// `\n` bytes before `last_end`: where the decoders count lines from (they split on `\n`).
    newlines: u64,
    /// The last byte fed was a `\r`, so a `\n` starting the next chunk completes a `\r\n`
    /// (one line end, not two).
    after_cr: bool,
}

impl LineCutter {
    /// `max_record`: the most bytes a record may have, its line end not counted.
    pub fn new(ends: LineEnds, max_record: usize) -> Self {
        Self {
            ends,
            max_record,
            fed: 0,
            last_end: 0,
            lines: 0,
            newlines: 0,
            after_cr: false,
        }
    }

    /// Takes the next bytes of the body and answers the offset (from the body's start) just
    /// past the last line end fed so far, or an error for the first record longer than the
    /// limit, as soon as it is (whether its line end has arrived or not). Only `chunk` is
    /// searched. After an error the cutter is spent: the body is to be refused.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<u64, RecordTooLong> {
        let base = self.fed;
        match self.ends {
            LineEnds::Lf => {
                for p in memchr_iter(b'\n', chunk) {
                    self.line_end(base + p as u64, true, true)?;
                }
            }
            LineEnds::LfOrCr => {
                for p in memchr2_iter(b'\n', b'\r', chunk) {
                    let after_cr = match p.checked_sub(1) {
                        None => self.after_cr,
                        Some(q) => chunk[q] == b'\r',
                    };
                    let lf = chunk[p] == b'\n';
                    self.line_end(base + p as u64, !(lf && after_cr), lf)?;
                }
                self.after_cr = chunk.last().map_or(self.after_cr, |&b| b == b'\r');
            }
        }
        self.fed += chunk.len() as u64;
        self.check(self.fed)?;
        Ok(self.last_end)
    }

    /// A line end at offset `at` of the body; `new_line` is false for the `\n` of a `\r\n`,
    /// `lf` true for a `\n`.
    fn line_end(&mut self, at: u64, new_line: bool, lf: bool) -> Result<(), RecordTooLong> {
        self.check(at)?;
        self.lines += u64::from(new_line);
        self.newlines += u64::from(lf);
        self.last_end = at + 1;
        Ok(())
    }

    /// Refuses the open record if it is longer than the limit where it reaches `end`.
    fn check(&self, end: u64) -> Result<(), RecordTooLong> {
        if end - self.last_end > self.max_record as u64 {
            return Err(RecordTooLong {
                line: self.lines + 1,
                limit: self.max_record,
                ends: self.ends,
            });
        }
        Ok(())
    }

    /// The offset just past the last line end fed so far (0: none yet).
    pub fn last_end(&self) -> u64 {
        self.last_end
    }

    /// The `\n` bytes before `last_end`.
    pub fn newlines(&self) -> u64 {
        self.newlines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Line ends found by a plain scan of the whole body: offsets just past each, and the
    /// count of lines they end.
    fn reference(ends: LineEnds, body: &[u8]) -> (Vec<u64>, u64) {
        let mut cuts = Vec::new();
        let mut lines = 0;
        for (i, &b) in body.iter().enumerate() {
            let end = match (ends, b) {
                (_, b'\n') => {
                    if !(ends == LineEnds::LfOrCr && i > 0 && body[i - 1] == b'\r') {
                        lines += 1;
                    }
                    true
                }
                (LineEnds::LfOrCr, b'\r') => {
                    lines += 1;
                    true
                }
                _ => false,
            };
            if end {
                cuts.push(i as u64 + 1);
            }
        }
        (cuts, lines)
    }

    /// Feeds `body` in pieces of the given sizes (cycled); answers each feed's result.
    fn feed_all(
        cutter: &mut LineCutter,
        body: &[u8],
        sizes: &[usize],
    ) -> Vec<Result<u64, RecordTooLong>> {
        let mut out = Vec::new();
        let mut at = 0;
        for &n in sizes.iter().cycle() {
            if at >= body.len() {
                break;
            }
            let end = (at + n.max(1)).min(body.len());
            let r = cutter.feed(&body[at..end]);
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
            at = end;
        }
        out
    }

    #[test]
    fn cuts_after_the_last_line_end_of_what_was_fed() {
        let mut c = LineCutter::new(LineEnds::Lf, 100);
        assert_eq!(c.feed(b"1,2"), Ok(0));
        assert_eq!(c.feed(b",3\n4,5"), Ok(6));
        assert_eq!(c.feed(b",6\r\n7\n8"), Ok(15));
        assert_eq!(c.feed(b""), Ok(15));
        assert_eq!(c.last_end(), 15);
    }

    #[test]
    fn a_lone_cr_ends_a_csv_line_only() {
        let body = b"1,2,3\r4,5,6\r";
        assert_eq!(LineCutter::new(LineEnds::LfOrCr, 100).feed(body), Ok(12));
        assert_eq!(LineCutter::new(LineEnds::Lf, 100).feed(body), Ok(0));
        assert_eq!(
            LineEnds::of(InputFormat::Csv { header: false }),
            LineEnds::LfOrCr
        );
        assert_eq!(LineEnds::of(InputFormat::JsonLines), LineEnds::Lf);
    }

    #[test]
    fn a_record_over_the_limit_is_refused_with_its_line() {
        let mut c = LineCutter::new(LineEnds::Lf, 8);
        assert_eq!(c.feed(b"a\n\nbcdefgh"), Ok(3));
        assert_eq!(c.feed(b"i\nk"), Ok(12));
        let err = c.feed(b"lmnopqrs").unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(err.limit, 8);
        let msg = err.to_string();
        assert!(
            msg.starts_with("the record starting at line 4 is longer than 8 bytes"),
            "{msg}"
        );
        assert!(
            msg.ends_with("(a JSON Lines record ends with \\n)"),
            "{msg}"
        );
        // Exactly the limit is fine.
        let mut c = LineCutter::new(LineEnds::Lf, 8);
        assert_eq!(c.feed(b"12345678"), Ok(0));
        assert!(c.feed(b"9").is_err());
    }

    #[test]
    fn crlf_counts_as_one_line_even_when_split_between_chunks() {
        let mut c = LineCutter::new(LineEnds::LfOrCr, 3);
        assert_eq!(c.feed(b"a\r"), Ok(2));
        assert_eq!(c.feed(b"\nb\r\r"), Ok(6));
        // Lines: "a", "b", "" then the long record on line 4.
        assert_eq!(c.feed(b"cdef").unwrap_err().line, 4);
        // A CR-only JSON Lines body is one record.
        let err = LineCutter::new(LineEnds::Lf, 4)
            .feed(b"[1]\r[2]\r")
            .unwrap_err();
        assert_eq!(err.line, 1);
    }

    proptest! {
        /// However the body is cut into chunks, the cutter finds the line ends a plain scan
        /// of the whole body finds, and refuses exactly the records over the limit.
        #[test]
        fn any_chunking_gives_the_whole_body_answer(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b',')], 0..200),
            sizes in proptest::collection::vec(1usize..20, 1..8),
            max in 0usize..12,
            crlf in any::<bool>(),
        ) {
            let ends = if crlf { LineEnds::LfOrCr } else { LineEnds::Lf };
            let (cuts, _) = reference(ends, &body);
            // Where a plain scan says the first over-long record starts, if any.
            let mut starts = vec![0u64];
            starts.extend(&cuts);
            let first_long = starts.iter().enumerate().find_map(|(i, &s)| {
                let end = cuts.get(i).map_or(body.len() as u64, |&e| e - 1);
                (end - s > max as u64).then_some(s)
            });
            let mut cutter = LineCutter::new(ends, max);
            let out = feed_all(&mut cutter, &body, &sizes);
            match (first_long, out.last()) {
                (Some(start), Some(Err(e))) => {
                    let (_, lines) = reference(ends, &body[..start as usize]);
                    prop_assert_eq!(e.line, lines + 1);
                    prop_assert_eq!(cutter.last_end(), start);
                }
                (None, last) => {
                    prop_assert!(last.is_none_or(|r| r.is_ok()));
                    prop_assert_eq!(cutter.last_end(), cuts.last().copied().unwrap_or(0));
                    let before = &body[..cutter.last_end() as usize];
                    prop_assert_eq!(
                        cutter.newlines(),
                        before.iter().filter(|&&b| b == b'\n').count() as u64
                    );
                }
                (Some(start), last) => prop_assert!(false, "record at {start} not refused: {last:?}"),
            }
            // Every answer is a line end of the body (or 0), and they never go back.
            let ok: Vec<u64> = out.iter().filter_map(|r| r.clone().ok()).collect();
            prop_assert!(ok.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(ok.iter().all(|&e| e == 0 || cuts.contains(&e)));
        }
    }
}
