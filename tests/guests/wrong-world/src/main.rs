//! A component of the wrong world: built for wasm32-wasip2, a `fn main` binary is a
//! `wasi:cli/command` component (it exports `wasi:cli/run`, not `slmfn:agent/handler`), so
//! deploying it must fail with 400.

fn main() {
    println!("hi");
}
