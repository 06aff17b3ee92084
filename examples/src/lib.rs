//! Shared code of the examples: the `serve` binary's command line ([`cli`]).

pub mod cli;

/// The workspace README's code blocks, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
