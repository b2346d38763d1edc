//! The `fn` developer CLI; see `slmfn-cli`.

fn main() -> std::process::ExitCode {
    slmfn_cli::main()
}
