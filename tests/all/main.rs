//! End-to-end tests: a real runtime process (`fn serve`), real components built from
//! `functions/` and `tests/guests/`, real HTTP clients and the real `fn` CLI.

mod support;

mod cli;
mod crash;
mod deploy;
mod isolation;
mod load;
