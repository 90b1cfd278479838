//! Where an input's bytes come from. The HTTP body stream is `http/`'s own source; the
//! ones here need nothing of HTTP.

use std::fs::File;
use std::future::Future;
use std::io::Read;

use bytes::BytesMut;

/// An input read piece by piece.
pub trait Source {
    type Error;

    /// Appends the input's next bytes to `buf` (about `want` of them, or what arrived) and
    /// answers how many; 0 once the input ended.
    fn fill(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
    ) -> impl Future<Output = Result<usize, Self::Error>>;
}

/// A body already in memory, handed over without a copy.
pub struct Whole(Option<BytesMut>);

impl Whole {
    pub fn new(body: BytesMut) -> Self {
        Self(Some(body))
    }
}

impl Source for Whole {
    type Error = std::convert::Infallible;

    async fn fill(&mut self, buf: &mut BytesMut, _want: usize) -> Result<usize, Self::Error> {
        let Some(body) = self.0.take() else {
            return Ok(0);
        };
        let n = body.len();
        if buf.is_empty() {
            *buf = body;
        } else {
            buf.extend_from_slice(&body);
        }
        Ok(n)
    }
}

/// A file, read on the blocking pool in blocks of `want` bytes.
pub struct FileSource {
    file: Option<File>,
    reads: usize,
}

impl FileSource {
    pub fn new(file: File) -> Self {
        Self {
            file: Some(file),
            reads: 0,
        }
    }
}

impl Source for FileSource {
    type Error = String;

    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> Result<usize, String> {
        let mut file = self
            .file
            .take()
            .ok_or("the input file was lost by an earlier failure")?;
        // The bytes not yet cut start the new block, which is read straight into place. They
        // are usually the open record, a short copy; an input scored whole (`Split::Whole`)
        // is all carry, and its buffer, held by nothing else, becomes the block without a
        // copy and grows by doubling.
        let carry = Vec::from(std::mem::take(buf));
        let first = self.reads == 1;
        self.reads += 1;
        let (file, block, n) = super::blocking(move || {
            if first {
                super::injected_panic("reader");
            }
            let mut block = carry;
            block.reserve(want);
            let n = (&mut file)
                .take(want as u64)
                .read_to_end(&mut block)
                .map_err(|e| format!("reading the input: {e}"))?;
            Ok::<_, String>((file, block, n))
        })
        .await
        .map_err(|m| format!("the reading thread {m}"))??;
        *buf = BytesMut::from(bytes::Bytes::from(block));
        self.file = Some(file);
        Ok(n)
    }
}
