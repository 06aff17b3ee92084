//! The listing query-string parser: `GET /api/fuzz/tasks?<raw bytes>` through the whole API;
//! never a 5xx, every 4xx problem+json (see `todo_fuzz::check_query`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| todo_fuzz::check_query(data));
