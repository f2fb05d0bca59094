//! The `tessera` binary: everything is in the library.

/// mimalloc: markedly cheaper than the system allocator for the many small, short-lived
/// allocations of request handling.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tessera::cli::main()
}
