//! Cutting an input into pieces of whole records as its bytes arrive. Each byte is searched
//! for line ends once (`LineCutter`), and only up to where the next cut may fall: a body
//! handed over whole is cut as it is fed, not scanned to its end first.

use bytes::BytesMut;

use super::{Piece, Split};
use crate::codec::lines::{LineCutter, LineEnds, RecordTooLong};
use crate::codec::InputFormat;

pub(super) struct Cutter {
    /// None: the input is one piece (`Split::Whole`).
    lines: Option<LineCutter>,
    /// The input's bytes not yet cut, from offset `base`.
    buf: BytesMut,
    base: u64,
    /// Offset up to which `lines` has been fed.
    fed: u64,
    target: u64,
    /// `\n` bytes before `base`.
    newlines: u64,
    index: usize,
    /// `Split::Whole`: the one piece was cut.
    whole_cut: bool,
}

impl Cutter {
    pub(super) fn new(format: InputFormat, split: Split, target: usize, max_record: usize) -> Self {
        Self {
            lines: (split == Split::Line)
                .then(|| LineCutter::new(LineEnds::of(format), max_record)),
            buf: BytesMut::new(),
            base: 0,
            fed: 0,
            // A piece no longer than a record may be: a record over the limit is then found
            // only after the records before it are cut, so errors keep their input order.
            target: target.clamp(1, max_record.max(1)) as u64,
            newlines: 0,
            index: 0,
            whole_cut: false,
        }
    }

    /// Where a source appends the input's next bytes.
    pub(super) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held that are not yet cut.
    pub(super) fn held(&self) -> usize {
        self.buf.len()
    }

    /// The next piece: about `target` bytes ending at a line end, or the rest once the input
    /// ended (`eof`). None when more input is needed first.
    pub(super) fn next_piece(&mut self, eof: bool) -> Result<Option<Piece>, RecordTooLong> {
        let Some(lines) = &mut self.lines else {
            if eof && !self.whole_cut {
                self.whole_cut = true;
                let n = self.buf.len();
                return Ok(Some(self.cut(n, 0)));
            }
            return Ok(None);
        };
        let avail = self.base + self.buf.len() as u64;
        let goal = self.base + self.target;
        let mut at = None;
        loop {
            let end = lines.last_end();
            if end > self.base && self.fed >= goal {
                at = Some((end, lines.newlines()));
                break;
            }
            if self.fed >= avail {
                break;
            }
            // Up to the goal first, so that the cut falls near it; past it (a record longer
            // than a piece) a piece's worth at a time, until a line end or the record limit.
            let upto = if self.fed < goal {
                goal.min(avail)
            } else {
                (self.fed + self.target).min(avail)
            };
            let from = (self.fed - self.base) as usize;
            lines.feed(&self.buf[from..(upto - self.base) as usize])?;
            self.fed = upto;
        }
        if let Some((end, newlines)) = at {
            return Ok(Some(self.cut((end - self.base) as usize, newlines)));
        }
        if eof && !self.buf.is_empty() {
            // The rest: whole records, the last one perhaps without a line end.
            let n = self.buf.len();
            return Ok(Some(self.cut(n, 0)));
        }
        Ok(None)
    }

    /// Cuts the first `n` bytes; `newlines`: the `\n` bytes before the cut.
    fn cut(&mut self, n: usize, newlines: u64) -> Piece {
        let piece = Piece {
            index: self.index,
            bytes: self.buf.split_to(n).freeze(),
            lines_before: self.newlines,
        };
        self.base += n as u64;
        self.newlines = newlines;
        self.index += 1;
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `body` in reads of the given sizes (cycled), cutting whenever a piece is ready;
    /// answers the pieces.
    fn cut_all(
        body: &[u8],
        reads: &[usize],
        target: usize,
        max: usize,
    ) -> Result<Vec<Piece>, RecordTooLong> {
        let csv = InputFormat::Csv { header: false };
        let mut c = Cutter::new(csv, Split::Line, target, max);
        let (mut at, mut out, mut eof) = (0, Vec::new(), false);
        for &n in reads.iter().cycle() {
            while let Some(p) = c.next_piece(eof)? {
                out.push(p);
            }
            if eof {
                break;
            }
            let end = (at + n.max(1)).min(body.len());
            c.buf_mut().extend_from_slice(&body[at..end]);
            eof = end == at;
            at = end;
        }
        Ok(out)
    }

    #[test]
    fn pieces_end_at_line_ends_near_the_target() {
        let body = b"1,2\n3,4\n5,6\n7,8\n9";
        let pieces = cut_all(body, &[100], 5, 100).unwrap();
        let texts: Vec<&[u8]> = pieces.iter().map(|p| &p.bytes[..]).collect();
        assert_eq!(texts, [&b"1,2\n"[..], b"3,4\n", b"5,6\n", b"7,8\n", b"9"]);
        let lines: Vec<u64> = pieces.iter().map(|p| p.lines_before).collect();
        assert_eq!(lines, [0, 1, 2, 3, 4]);
        // A record longer than a piece makes one longer piece, up to the record limit.
        let pieces = cut_all(b"1234567890\n1\n", &[3], 4, 100).unwrap();
        assert_eq!(&pieces[0].bytes[..], b"1234567890\n");
        assert!(cut_all(b"1234567890\n1\n", &[3], 4, 8).is_err());
        // Pieces larger than the record limit are cut at the limit, so the records before an
        // over-long one are cut (and answered) before it is refused.
        let csv = InputFormat::Csv { header: false };
        let mut c = Cutter::new(csv, Split::Line, 100, 8);
        c.buf_mut().extend_from_slice(b"ab\n1234567890\n");
        assert_eq!(&c.next_piece(false).unwrap().unwrap().bytes[..], b"ab\n");
        assert!(c.next_piece(false).is_err());
    }

    proptest! {
        /// However the input arrives and whatever the piece size, the pieces are the input
        /// in order, each but the last ends at a line end, and each knows the `\n` before it.
        #[test]
        fn pieces_cover_the_input_at_line_ends(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b',')], 0..300),
            reads in proptest::collection::vec(1usize..40, 1..6),
            target in 1usize..50,
        ) {
            let pieces = cut_all(&body, &reads, target, 1 << 20).unwrap();
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.bytes.iter().copied()).collect();
            prop_assert_eq!(&joined, &body);
            let mut before = 0u64;
            for (i, p) in pieces.iter().enumerate() {
                prop_assert_eq!(p.index, i);
                prop_assert_eq!(p.lines_before, before);
                before += p.bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                if i + 1 < pieces.len() {
                    prop_assert!(matches!(p.bytes.last(), Some(b'\n' | b'\r')));
                }
                prop_assert!(!p.bytes.is_empty());
            }
        }
    }
}
