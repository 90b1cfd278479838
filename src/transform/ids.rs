//! Pass-through columns: a device id must come back with its prediction. The chosen CSV
//! columns are cut out of each record before the model sees it, and written in front of its
//! answer line (SageMaker's `InputFilter`, `JoinSource=Input` and `OutputFilter` in one).
//!
//! The scorer answers one line per non-blank record, in order, so the ids wait in a queue
//! between the source (which cuts them out) and the sink (which puts them back): it holds
//! the ids of the pieces in flight, no more. A count that does not match at the end fails the
//! input rather than pairing an id with another row's answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use crate::stream::{self, Done, Job, Sink, Source, StreamError};

type Ids = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Whether `columns` can be passed through for this input and answer: CSV split by line in,
/// CSV answers out, each column once, none past 4096.
pub fn check_columns(
    columns: &[usize],
    format: crate::codec::InputFormat,
    split: super::SplitType,
    accept: crate::codec::OutputFormat,
) -> Result<(), String> {
    if columns.is_empty() {
        return Ok(());
    }
    if format != (crate::codec::InputFormat::Csv { header: false })
        || split != super::SplitType::Line
    {
        return Err("pass-through columns need CSV input split by line".into());
    }
    if accept != crate::codec::OutputFormat::Csv {
        return Err(
            "pass-through columns are written in front of CSV answers: answer text/csv".into(),
        );
    }
    let mut seen = columns.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != columns.len() {
        return Err("a column is listed twice".into());
    }
    match columns.iter().find(|&&c| c > 4096) {
        Some(c) => Err(format!("column {c} is past 4096")),
        None => Ok(()),
    }
}

/// `stream::score` with the `columns` of each record passed through.
pub async fn score<S: Source<Error = String>, K: Sink>(
    job: Job,
    columns: &[usize],
    source: &mut S,
    sink: &mut K,
) -> Result<Done, StreamError<String>> {
    let ids: Ids = Arc::default();
    let mut source = Cut {
        inner: source,
        columns,
        ids: Arc::clone(&ids),
        carry: BytesMut::new(),
        ended: false,
        record: 0,
    };
    let mut sink = Join {
        inner: sink,
        ids: Arc::clone(&ids),
    };
    let done = stream::score(job, &mut source, &mut sink, |_| Ok(())).await?;
    let left = ids.lock().map(|q| q.len()).unwrap_or(0);
    if left > 0 {
        return Err(StreamError::Failed(format!(
            "{left} records' ids were left without an answer line"
        )));
    }
    Ok(done)
}

struct Cut<'a, S> {
    inner: &'a mut S,
    columns: &'a [usize],
    ids: Ids,
    carry: BytesMut,
    ended: bool,
    /// Records seen, for messages.
    record: u64,
}

impl<S: Source<Error = String>> Source for Cut<'_, S> {
    type Error = String;

    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> Result<usize, String> {
        let before = buf.len();
        while buf.len() == before && !self.ended {
            if self.carry.len() > stream::MAX_RECORD_BYTES {
                return Err(format!(
                    "record {}: longer than {} bytes with no line end",
                    self.record + 1,
                    stream::MAX_RECORD_BYTES
                ));
            }
            let n = self.inner.fill(&mut self.carry, want).await?;
            self.ended = n == 0;
            self.cut(buf)?;
        }
        Ok(buf.len() - before)
    }
}

impl<S> Cut<'_, S> {
    /// Moves the complete lines of `carry` (all of it at the end) into `buf`, ids cut out.
    fn cut(&mut self, buf: &mut BytesMut) -> Result<(), String> {
        let mut start = 0;
        let data = std::mem::take(&mut self.carry);
        let mut ids = Vec::new();
        loop {
            let rest = &data[start..];
            let Some(at) = memchr::memchr2(b'\n', b'\r', rest) else {
                break;
            };
            // A CR last in the buffer may be half of a CRLF: wait for the next byte.
            if rest[at] == b'\r' && at + 1 == rest.len() && !self.ended {
                break;
            }
            let end = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                at + 2
            } else {
                at + 1
            };
            if self.line(&rest[..at], buf, &mut ids)? {
                buf.extend_from_slice(b"\n");
            }
            start += end;
        }
        if self.ended && start < data.len() {
            self.line(&data[start..], buf, &mut ids)?;
            start = data.len();
        }
        self.carry.extend_from_slice(&data[start..]);
        if !ids.is_empty() {
            self.ids
                .lock()
                .map_err(|_| "the id queue was poisoned".to_string())?
                .extend(ids);
        }
        Ok(())
    }

    /// Writes one record without its ids; false for a blank line, which is not a record
    /// (the scorer would skip it) and is dropped.
    fn line(
        &mut self,
        line: &[u8],
        buf: &mut BytesMut,
        ids: &mut Vec<Vec<u8>>,
    ) -> Result<bool, String> {
        if line.is_empty() {
            return Ok(false);
        }
        self.record += 1;
        let fields = split_fields(line);
        let mut id = Vec::new();
        for (k, &c) in self.columns.iter().enumerate() {
            let f = fields.get(c).ok_or_else(|| {
                format!(
                    "record {}: has {} columns; id column {c} is not there",
                    self.record,
                    fields.len()
                )
            })?;
            if k > 0 {
                id.push(b',');
            }
            id.extend_from_slice(f);
        }
        let (mut first, start) = (true, buf.len());
        for (i, f) in fields.iter().enumerate() {
            if self.columns.contains(&i) {
                continue;
            }
            if !first {
                buf.extend_from_slice(b",");
            }
            first = false;
            buf.extend_from_slice(f);
        }
        // Nothing left but one empty field: still a record (a bad one), not a blank line the
        // scorer would skip and so pair the next answer with this id.
        if buf.len() == start {
            buf.extend_from_slice(b"\"\"");
        }
        ids.push(id);
        Ok(true)
    }
}

/// The fields of a CSV line as they are written (quotes kept), split at commas outside quotes.
pub fn split_fields(line: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                fields.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&line[start..]);
    fields
}

struct Join<'a, K> {
    inner: &'a mut K,
    ids: Ids,
}

impl<K: Sink> Sink for Join<'_, K> {
    async fn write(&mut self, lead: &'static [u8], bytes: Vec<u8>) -> Result<(), String> {
        // The scorer writes only pieces with records, one answer line each, joined by '\n'.
        let lines = memchr::memchr_iter(b'\n', &bytes).count() + 1;
        let mut out = Vec::with_capacity(bytes.len() + lines * 16);
        {
            let mut q = self
                .ids
                .lock()
                .map_err(|_| "the id queue was poisoned".to_string())?;
            if q.len() < lines {
                return Err(format!("{lines} answer lines but {} ids", q.len()));
            }
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                if let Some(id) = q.pop_front() {
                    out.extend_from_slice(&id);
                }
                out.push(b',');
                out.extend_from_slice(line);
            }
        }
        self.inner.write(lead, out).await
    }

    fn held(&self) -> usize {
        self.inner.held()
    }

    fn progress(&mut self, input: usize, rows: usize) {
        self.inner.progress(input, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_outside_quotes_only() {
        assert_eq!(split_fields(b"a,b,,c"), vec![&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(
            split_fields(br#""x,y",1,"he said ""hi""""#),
            vec![&br#""x,y""#[..], b"1", br#""he said ""hi""""#]
        );
    }

    #[tokio::test]
    async fn ids_are_cut_from_whole_lines_whatever_the_blocks() {
        struct Blocks(Vec<&'static [u8]>);
        impl Source for Blocks {
            type Error = String;
            async fn fill(&mut self, buf: &mut BytesMut, _: usize) -> Result<usize, String> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let b = self.0.remove(0);
                buf.extend_from_slice(b);
                Ok(b.len())
            }
        }
        let mut inner = Blocks(vec![b"d1,0.5,", b"1\r", b"\n\nd2,", b"0.25,2\rd3,1,3"]);
        let mut cut = Cut {
            inner: &mut inner,
            columns: &[0],
            ids: Arc::default(),
            carry: BytesMut::new(),
            ended: false,
            record: 0,
        };
        let mut buf = BytesMut::new();
        while cut.fill(&mut buf, 4).await.unwrap() > 0 {}
        assert_eq!(&buf[..], b"0.5,1\n0.25,2\n1,3");
        let ids: Vec<Vec<u8>> = cut.ids.lock().unwrap().iter().cloned().collect();
        assert_eq!(ids, vec![b"d1".to_vec(), b"d2".to_vec(), b"d3".to_vec()]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    struct Blocks(Vec<u8>, usize);
    impl Source for Blocks {
        type Error = String;
        async fn fill(&mut self, buf: &mut BytesMut, _: usize) -> Result<usize, String> {
            let n = self.1.min(self.0.len());
            buf.extend_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9.\\-]{0,6}", "\"[a-z ,]{0,5}\""]
    }

    proptest! {
        /// Whatever the blocks and line ends, each record comes out without its id fields and
        /// its ids queue up in order, and the joined answers put each id back on its own line.
        #[test]
        fn ids_cut_and_join_back_in_order(
            records in proptest::collection::vec(proptest::collection::vec(field(), 3..6), 1..20),
            ends in proptest::collection::vec(prop_oneof!["\n", "\r\n", "\r", "\n\n"], 20),
            columns in proptest::sample::subsequence(vec![0usize, 1, 2], 1..3),
            block in 1usize..40,
            last_end in any::<bool>(),
        ) {
            let mut input = Vec::new();
            for (i, r) in records.iter().enumerate() {
                input.extend_from_slice(r.join(",").as_bytes());
                if i + 1 < records.len() || last_end {
                    input.extend_from_slice(ends[i].as_bytes());
                }
            }
            // An empty first field on a one-field... record of only empty fields would be a
            // blank line: not a record, so not in the expectations either.
            let expected: Vec<&Vec<String>> = records.iter().filter(|r| !r.join(",").is_empty()).collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let ids: Ids = Arc::default();
            let mut inner = Blocks(input, block);
            let mut cut = Cut { inner: &mut inner, columns: &columns, ids: Arc::clone(&ids), carry: BytesMut::new(), ended: false, record: 0 };
            let mut buf = BytesMut::new();
            rt.block_on(async { while cut.fill(&mut buf, block).await.unwrap() > 0 {} });
            let lines: Vec<&[u8]> = buf[..].split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            prop_assert_eq!(lines.len(), expected.len());
            for (line, r) in lines.iter().zip(&expected) {
                let rest: Vec<&str> = r.iter().enumerate().filter(|(i, _)| !columns.contains(i)).map(|(_, f)| f.as_str()).collect();
                let mut want = rest.join(",");
                if want.is_empty() {
                    want = "\"\"".into();
                }
                prop_assert_eq!(*line, want.as_bytes());
            }
            struct Collect(Vec<u8>);
            impl Sink for Collect {
                async fn write(&mut self, lead: &'static [u8], bytes: Vec<u8>) -> Result<(), String> {
                    self.0.extend_from_slice(lead);
                    self.0.extend_from_slice(&bytes);
                    Ok(())
                }
            }
            let mut out = Collect(Vec::new());
            let mut join = Join { inner: &mut out, ids: Arc::clone(&ids) };
            let answers: Vec<String> = (0..expected.len()).map(|i| format!("a{i}")).collect();
            // Answers arrive in pieces of up to three lines.
            for (k, chunk) in answers.chunks(3).enumerate() {
                let lead: &'static [u8] = if k == 0 { b"" } else { b"\n" };
                rt.block_on(join.write(lead, chunk.join("\n").into_bytes())).unwrap();
            }
            let joined = String::from_utf8(out.0).unwrap();
            for (i, (line, r)) in joined.split('\n').zip(&expected).enumerate() {
                let id: Vec<&str> = columns.iter().map(|&c| r[c].as_str()).collect();
                prop_assert_eq!(line.to_string(), format!("{},a{i}", id.join(",")));
            }
            prop_assert!(ids.lock().unwrap().is_empty());
        }
    }
}
