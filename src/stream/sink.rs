//! Where answers go, in input order.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, Write};

/// An answer written piece by piece.
pub trait Sink {
    /// Appends `lead` (the body's framing: its opening or a separator) then `bytes`.
    fn write(
        &mut self,
        lead: &'static [u8],
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>>;

    /// Answer bytes held in memory, counted against a memory budget.
    fn held(&self) -> usize {
        0
    }

    /// A piece of `input` bytes and `rows` records was answered.
    fn progress(&mut self, _input: usize, _rows: usize) {}
}

/// An answer small enough to hold, or spooled to an unlinked temporary file.
pub enum Answer {
    Memory(Vec<u8>),
    Spool(File),
}

/// An answer that cannot be sent before it is complete (an error found late must still be
/// the answer): held up to `SPOOL_AT`, then written to an unlinked temporary file
/// (`tempfile`: O_TMPFILE where there is one, so no name to guess or pre-create). File I/O
/// runs on the blocking pool: under dirty-page throttling a write can block for long.
#[derive(Default)]
pub struct Spool {
    held: Vec<u8>,
    file: Option<File>,
}

/// Answers up to this size stay in memory; larger ones go to a spool file as they grow.
const SPOOL_AT: usize = 4 * 1024 * 1024;

impl Sink for Spool {
    async fn write(&mut self, lead: &'static [u8], bytes: Vec<u8>) -> Result<(), String> {
        if self.held.is_empty() && lead.is_empty() && self.file.is_none() {
            self.held = bytes;
        } else {
            self.held.extend_from_slice(lead);
            self.held.extend_from_slice(&bytes);
        }
        if self.held.len() > SPOOL_AT || self.file.is_some() {
            self.spill(false).await?;
        }
        Ok(())
    }

    fn held(&self) -> usize {
        // What is written: a piece's encoder reserves more than it writes, and pages never
        // written are not memory.
        self.held.len()
    }
}

impl Spool {
    /// The whole answer.
    pub async fn finish(mut self) -> Result<Answer, String> {
        if self.file.is_none() {
            return Ok(Answer::Memory(self.held));
        }
        self.spill(true).await?;
        self.file
            .map(Answer::Spool)
            .ok_or_else(|| "no answer spool".to_string())
    }

    /// Writes what is held to the file (created on the first write), then rewinds it for
    /// reading if `rewind`.
    async fn spill(&mut self, rewind: bool) -> Result<(), String> {
        let (file, held) = (self.file.take(), std::mem::take(&mut self.held));
        let (file, held) = super::blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => tempfile::tempfile()
                    .map_err(|e| format!("cannot create an answer spool: {e}"))?,
            };
            file.write_all(&held)
                .and_then(|()| if rewind { file.rewind() } else { Ok(()) })
                .map_err(|e| format!("answer spool: {e}"))?;
            Ok::<_, String>((file, held))
        })
        .await
        .map_err(|m| format!("the answer spool's writer {m}"))??;
        // The buffer is dropped, not cleared: its pages were written and would stay
        // resident while `held()` said nothing is held.
        drop(held);
        self.file = Some(file);
        Ok(())
    }
}

/// Streams a spooled answer in 256 KiB blocks, each read on the blocking pool.
pub fn spool_stream(
    file: File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            let mut block = vec![0u8; 256 * 1024];
            let n = file.read(&mut block);
            n.map(|n| {
                block.truncate(n);
                (file, block)
            })
        })
        .await;
        match read {
            Ok(Ok((_, block))) if block.is_empty() => None,
            Ok(Ok((file, block))) => Some((Ok(bytes::Bytes::from(block)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

/// A file, written on the blocking pool; `on_piece` hears of each piece answered.
pub struct FileSink<P: FnMut(usize, usize)> {
    file: Option<File>,
    writes: usize,
    on_piece: P,
}

impl<P: FnMut(usize, usize)> FileSink<P> {
    pub fn new(file: File, on_piece: P) -> Self {
        Self {
            file: Some(file),
            writes: 0,
            on_piece,
        }
    }

    /// Flushes the file to disk.
    pub async fn finish(mut self) -> Result<(), String> {
        let file = self.take()?;
        super::blocking(move || file.sync_all().map_err(|e| e.to_string()))
            .await
            .map_err(|m| format!("the writing thread {m}"))?
    }

    fn take(&mut self) -> Result<File, String> {
        self.file
            .take()
            .ok_or_else(|| "the output file was lost by an earlier failure".to_string())
    }
}

impl<P: FnMut(usize, usize)> Sink for FileSink<P> {
    async fn write(&mut self, lead: &'static [u8], bytes: Vec<u8>) -> Result<(), String> {
        let mut file = self.take()?;
        let second = self.writes == 1;
        self.writes += 1;
        let file = super::blocking(move || {
            if second {
                super::injected_panic("writer");
            }
            file.write_all(lead)
                .and_then(|()| file.write_all(&bytes))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(file)
        })
        .await
        .map_err(|m| format!("the writing thread {m}"))??;
        self.file = Some(file);
        Ok(())
    }

    fn progress(&mut self, input: usize, rows: usize) {
        (self.on_piece)(input, rows);
    }
}
