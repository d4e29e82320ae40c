//! Test plugin that misbehaves on request, one way per route, so the tests
//! can check that comb's limits and sandbox end only the bad call.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use serde_json::json;

struct Misbehave;

impl Plugin for Misbehave {
    fn manifest() -> Manifest {
        // Output at load: comb logs it under the plugin.load span.
        eprintln!("misbehave: describing my routes");
        [
            "/misbehave/loop",
            "/misbehave/alloc",
            "/misbehave/sleep",
            "/misbehave/respond",
            "/misbehave/read-file",
            "/misbehave/env",
            "/misbehave/connect",
            "/misbehave/log",
            "/misbehave/print",
            "/misbehave/frame",
            "/misbehave/headers",
            "/misbehave/attributes",
            "/misbehave/forge",
            "/misbehave/spin",
        ]
        .into_iter()
        .fold(Manifest::new("misbehave", "0.0.1"), |m, path| {
            m.route("GET", path).route("POST", path)
        })
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("misbehave");
        let arg = |name: &str| request.query_param(name).unwrap_or_default();
        let number = |name: &str| arg(name).parse::<u64>().unwrap_or(0);
        match request.path.as_str() {
            "/misbehave/loop" => {
                let mut counter = 0u64;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "/misbehave/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    span.set("app.hoarded_mib", hoard.len());
                }
            }
            "/misbehave/sleep" => {
                // A test that must know the call has started asks for a line.
                if arg("announce") == "1" {
                    println!("misbehave starts sleeping");
                }
                std::thread::sleep(std::time::Duration::from_millis(number("ms")));
                Ok(http::json(200, &json!({"slept_ms": number("ms")})))
            }
            "/misbehave/spin" => Ok(http::json(200, &json!({ "turns": spin_for(number("ms")) }))),
            "/misbehave/respond" => Ok(Response {
                status: 200,
                headers: vec![],
                body: vec![b'x'; number("bytes") as usize],
            }),
            "/misbehave/read-file" => Ok(outcome(std::fs::read_to_string(arg("path")))),
            "/misbehave/env" => Ok(outcome(
                std::env::var(arg("name")).map_err(|e| e.to_string()),
            )),
            "/misbehave/connect" => Ok(outcome(
                std::net::TcpStream::connect(arg("addr")).map(|_| "connected".to_owned()),
            )),
            "/misbehave/log" => {
                for line in 0..number("lines") {
                    comb_sdk::log::info(
                        &format!("line {line}"),
                        [("app.line", (line as usize).into())],
                    );
                }
                comb_sdk::log::warn("done logging", []);
                if arg("error") == "1" {
                    comb_sdk::log::error("the ledger does not balance", [("app.off_by", 3.into())]);
                }
                Ok(http::json(200, &json!({"logged": number("lines") + 1})))
            }
            "/misbehave/print" => {
                use std::io::Write;
                {
                    let _inner = Span::start("inner");
                    println!("to stdout in inner");
                }
                eprintln!("to stderr");
                // No newline: comb logs it when the call ends.
                print!("unfinished");
                let _ = std::io::stdout().flush();
                Ok(http::json(200, &json!({"printed": 3})))
            }
            "/misbehave/frame" => Ok(Response {
                status: 200,
                // Framing of its own: were it passed on, the client would
                // read the rest of the body as its next response.
                headers: vec![
                    ("content-length".into(), "3".into()),
                    ("transfer-encoding".into(), "chunked".into()),
                    ("connection".into(), "close, x-hop".into()),
                    ("x-hop".into(), "1".into()),
                    ("keep-alive".into(), "timeout=1".into()),
                    ("x-kept".into(), "yes".into()),
                ],
                body: b"abcHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged".to_vec(),
            }),
            "/misbehave/headers" => Ok(Response {
                status: 200,
                headers: (0..number("count"))
                    .map(|i| (format!("x-h{i}"), "v".to_owned()))
                    .collect(),
                body: vec![],
            }),
            "/misbehave/attributes" => {
                // `count` values of `kib` KiB each, on the invocation span and
                // on `spans` spans of its own.
                let value = "x".repeat(number("kib") as usize * 1024);
                for i in 0..number("count") {
                    span.set(&format!("app.big{i}"), value.as_str());
                }
                drop(span);
                let invocation = Span::current();
                for i in 0..number("count") {
                    invocation.set(&format!("app.big{i}"), value.as_str());
                }
                for i in 0..number("spans") {
                    let child = Span::start("child");
                    child.set("app.i", i as usize);
                }
                Ok(http::json(200, &json!({"set": number("count")})))
            }
            "/misbehave/forge" => {
                drop(span);
                let current = Span::current();
                current.set("plugin.name", "forged");
                current.set("plugin.version", "forged");
                current.set("error.type", "forged");
                current.set("faas.coldstart", true);
                current.set("http.response.status_code", 299usize);
                current.set("app.allowed", "yes");
                current.update_name("forged");
                let own = Span::start("own");
                own.set("plugin.name", "forged");
                own.set("error.type", "its own");
                // A fake invocation span, to pass for a fast call.
                drop(Span::start("invoke home_activities"));
                Ok(http::json(200, &json!({"forged": true})))
            }
            _ => Err(HandlerError::BadRequest("no such misbehaviour".into())),
        }
    }
}

/// 200 with the value, or 403 with the error the guest got from WASI.
fn outcome<E: ToString>(result: Result<String, E>) -> Response {
    match result {
        Ok(value) => http::json(200, &json!({ "ok": value })),
        Err(error) => http::json(403, &json!({ "denied": error.to_string() })),
    }
}

/// Computes for `ms` milliseconds: a function a guest profile of the call
/// finds on top of its stacks.
#[inline(never)]
fn spin_for(ms: u64) -> u64 {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut turns = 0u64;
    while std::time::Instant::now() < until {
        for _ in 0..10_000 {
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
    }
    turns
}

comb_sdk::export!(Misbehave);
