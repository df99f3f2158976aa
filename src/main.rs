//! The `pika-remedy` binary: everything is in [`pika_remedy::cli`].

fn main() -> std::process::ExitCode {
    pika_remedy::cli::main()
}
