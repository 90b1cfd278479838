//! `codec::decode` on arbitrary bodies, against every signature in `mlapp_fuzz::signatures`:
//! no panic, a frame of the model's shape or a 400/422 error that names a row from 1, and
//! (for line-oriented bodies) the same rows when the body is decoded piece by piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlapp::codec::InputFormat;

fuzz_target!(|body: &[u8]| {
    mlapp_fuzz::decode_all(InputFormat::JsonLines, body);
});
