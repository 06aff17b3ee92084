//! The whole HTTP API in-process: query-string, header and body parsers. Never a 5xx; every
//! 4xx is problem+json with a matching `status` (see `todo_fuzz::check_http`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| todo_fuzz::check_http(data));
