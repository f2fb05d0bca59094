//! The `tessera` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    tessera::cli::main()
}
