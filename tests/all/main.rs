//! End-to-end tests: a real runtime process (`fn serve`), real components built from
//! `functions/` and `tests/guests/`, real HTTP clients and the real `fn` CLI.

// Helpers are `pub` for the modules of this one test binary.
#![allow(unreachable_pub)]

mod support;

mod bounds;
mod claims;
mod cli;
mod crash;
mod deploy;
mod events;
mod fuzz;
mod host;
mod inference;
mod isolation;
mod knative;
mod load;
mod openai;
mod tools;
