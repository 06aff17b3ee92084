//! The request-body parsers: raw bytes as the body of create, replace, update and toggle
//! through the whole API; never a 5xx, every 4xx problem+json (see `todo_fuzz::check_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| todo_fuzz::check_body(data));
