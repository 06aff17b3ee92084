//! The keyset cursor decoder, through `UserTasks::list` on an in-memory SQLite store: any
//! cursor string on any sort/order is Ok or `Invalid` naming `cursor` (see `todo_fuzz::check_cursor`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| todo_fuzz::check_cursor(data));
