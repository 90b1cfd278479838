//! Content negotiation on arbitrary header values: `media::input_format` (Content-Type),
//! `media::output_format` (Accept) and `media::parse_output` (the configured default).
//! No panic; a refusal answers 415 or 406; media types are case-insensitive; an answer type
//! that was picked is picked again when it is the whole Accept header.
//!
//! The input is lines: Content-Type, the default content type, Accept, the default accept,
//! then the body's first bytes. The first byte's low bit is the model's `csv_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlapp::codec::media::{self, InputFormat, MediaError, OutputFormat};
use mlapp::error::ApiError;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let csv_header = flags & 1 == 1;
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(5, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (content_type, default_in, accept, default_out) = (next(), next(), next(), next());
    let prefix = next().as_bytes();
    let prefix = &prefix[..prefix.len().min(8)];

    for ct in [Some(content_type), None] {
        let got = media::input_format(ct, default_in, csv_header, prefix);
        match &got {
            Ok(InputFormat::Csv { header }) => assert!(*header || !csv_header),
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e, MediaError::UnsupportedContentType(_)));
                assert_eq!(ApiError::from(again_err(e)).status(), 415);
            }
        }
        let upper = ct.map(str::to_ascii_uppercase);
        let again = media::input_format(
            upper.as_deref(),
            &default_in.to_ascii_uppercase(),
            csv_header,
            prefix,
        );
        assert_eq!(got.is_ok(), again.is_ok(), "{ct:?}: case matters");
        if let (Ok(a), Ok(b)) = (&got, &again) {
            assert_eq!(a, b, "{ct:?}: case matters");
        }
    }

    let default = media::parse_output(default_out).unwrap_or(OutputFormat::Json);
    if let Some(f) = media::parse_output(default_out) {
        assert_eq!(media::parse_output(f.mime()), Some(f));
        assert_eq!(
            media::parse_output(&default_out.to_ascii_uppercase()),
            Some(f)
        );
    }
    assert_eq!(media::output_format(None, default), Ok(default));
    let got = media::output_format(Some(accept), default);
    match got {
        Ok(f) => {
            for other in [
                OutputFormat::Json,
                OutputFormat::Csv,
                OutputFormat::JsonLines,
            ] {
                assert_eq!(media::output_format(Some(f.mime()), other), Ok(f));
            }
        }
        Err(ref e) => {
            assert!(matches!(e, MediaError::NotAcceptable(_)));
            assert_eq!(ApiError::from(again_err(e)).status(), 406);
        }
    }
    let upper = media::output_format(Some(&accept.to_ascii_uppercase()), default);
    assert_eq!(upper.ok(), got.ok(), "{accept:?}: case matters");
});

/// MediaError is not Clone: the same error again, for the conversion that consumes it.
fn again_err(e: &MediaError) -> MediaError {
    match e {
        MediaError::UnsupportedContentType(s) => MediaError::UnsupportedContentType(s.clone()),
        MediaError::NotAcceptable(s) => MediaError::NotAcceptable(s.clone()),
    }
}
