//! `codec::records::decode`, the line-by-line decoder of chunked scoring and `mlapp transform`,
//! on arbitrary line-oriented bodies against every signature. With placeholders it never fails,
//! accounts for every non-blank line (good rows + bad records = `count`), and names each bad
//! record by its row; without, it fails exactly when `codec::decode` does (Empty aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlapp::codec::records;
use mlapp::codec::{self, DecodeError, InputFormat};

fuzz_target!(|piece: &[u8]| {
    for format in [InputFormat::Csv { header: false }, InputFormat::JsonLines] {
        if !codec::line_oriented(format, piece) {
            continue;
        }
        let lines = records::count(format, piece);
        for s in mlapp_fuzz::signatures() {
            let name = s.name;
            let rows = match records::decode(format, piece, &s.sig, true) {
                Ok(rows) => rows,
                Err(e) => panic!("{format:?}/{name}: placeholder mode failed the piece: {e}"),
            };
            let good = rows.frame.as_ref().map_or(0, |f| f.rows);
            if let Some(frame) = &rows.frame {
                mlapp_fuzz::check_frame(format, s, frame);
            }
            assert_eq!(
                rows.total, lines,
                "{format:?}/{name}: records counted vs decoded"
            );
            assert_eq!(
                good + rows.bad.len(),
                rows.total,
                "{format:?}/{name}: good rows + bad records"
            );
            let mut last = None;
            for (i, reason) in &rows.bad {
                assert!(
                    *i < rows.total,
                    "{format:?}/{name}: bad record {i} of {}",
                    rows.total
                );
                assert!(
                    last.is_none_or(|l| l < *i),
                    "{format:?}/{name}: bad records in order"
                );
                last = Some(*i);
                assert!(!reason.is_empty());
                let at = records::reason_at(1000 + i, reason);
                assert!(
                    at.starts_with(&format!("row {}", 1001 + i)),
                    "{format:?}/{name}: \"{at}\" from \"{reason}\""
                );
            }

            let strict = records::decode(format, piece, &s.sig, false);
            match (codec::decode(format, piece, &s.sig), strict) {
                (Ok(a), Ok(b)) => assert!(
                    b.frame
                        .as_ref()
                        .is_some_and(|b| mlapp_fuzz::same_frame(&a, b)),
                    "{format:?}/{name}: {a:?} vs {:?}",
                    b.frame
                ),
                (Err(DecodeError::Empty), Ok(b)) => assert!(b.frame.is_none() && b.total == 0),
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "{format:?}/{name}");
                    mlapp_fuzz::check_error(format, s, &b);
                }
                (a, b) => panic!(
                    "{format:?}/{name}: decode {:?} but records::decode {:?}",
                    a.map(|f| f.rows),
                    b.map(|r| r.total)
                ),
            }
        }
    }
});
