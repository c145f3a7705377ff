//! Tries one socket operation and prints the result: `net-probe bind ADDR` (bind + listen),
//! `net-probe connect ADDR` or `net-probe resolve NAME` (ip-name-lookup). Prints `ok: …` or `error: …` (the error kind and message) and
//! exits 0 or 1. With wasip1 (no sockets) every operation fails.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: net-probe bind|connect ADDR | resolve NAME");
        std::process::exit(2);
    };
    let result = match op.as_str() {
        "bind" => TcpListener::bind(addr.as_str())
            .and_then(|l| l.local_addr())
            .map(|a| format!("listening on {a}")),
        "connect" => TcpStream::connect(addr.as_str())
            .and_then(|s| s.peer_addr())
            .map(|a| format!("connected to {a}")),
        "resolve" => (addr.as_str(), 0).to_socket_addrs().map(|addrs| {
            let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            format!("{addr} is {}", ips.join(" "))
        }),
        other => {
            eprintln!("unknown operation {other:?}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(what) => println!("ok: {what}"),
        Err(e) => {
            println!("error: {op} {addr}: {:?}: {e}", e.kind());
            std::process::exit(1);
        }
    }
}
