//! `sandlot-server`: the server as its own binary, for tests and for
//! running it without the CLI (`sandlot serve` calls the same `serve`).
//! Prints `listening on ADDR` on stdout once bound (port 0 picks one).

use std::io::Write;

use sandlot_server::{Server, ServerConfig, ServerError};

fn main() {
    sandlot_server::init_logging();
    if let Err(e) = run() {
        eprintln!("sandlot-server: {e}");
        std::process::exit(match e {
            ServerError::Config(_) => 2,
            _ => 1,
        });
    }
}

fn run() -> Result<(), ServerError> {
    let config = ServerConfig::from_args(std::env::args().skip(1))?;
    let server = Server::bind(config)?;
    let addr = server.local_addr()?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
    server.run()
}
