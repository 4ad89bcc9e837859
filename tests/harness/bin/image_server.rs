//! The tests' HTTP image server as a program, for benchmarks and demos:
//! serves a directory on 127.0.0.1 with Range support.
//!
//! Usage: ferrite-test-image-server <dir> [port]

use ferrite_tests::image_server::ImageServer;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: ferrite-test-image-server <dir> [port]");
        std::process::exit(2);
    };
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let server = ImageServer::start_on(dir.into(), port).await;
    println!("{}", server.url);
    let _ = tokio::signal::ctrl_c().await;
}
