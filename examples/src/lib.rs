//! Shared code of the examples: the `serve` binary's command line ([`cli`]).

pub mod cli;
