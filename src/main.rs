//! The `popsync` command. Everything happens in `popsync::cli`.

fn main() -> std::process::ExitCode {
    popsync::cli::main()
}
