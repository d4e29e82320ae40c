//! Test plugin: a standard `wasi:http/proxy` component that knows nothing
//! of comb. It answers every request with what it saw — method, path with
//! query, `traceparent`, body length — and logs one line to stdout; the
//! bytes of an `x-echo` request header come back in an `x-echo` response
//! header, untouched; a path ending in `/loop` loops forever, one ending in
//! `/panic` panics, one ending in `/hoard` creates header fields (each
//! with a kilobyte of header) and keeps them, without end, and one ending
//! in `/orphan` finishes its body while the body's stream is still open
//! (a host call that fails: wasi:http refuses to drop a resource with
//! children).

use wasip2::{
    exports::http::incoming_handler::Guest,
    http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    },
};

struct ProxyHello;

impl Guest for ProxyHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            other => format!("{other:?}"),
        };
        let path = request.path_with_query().unwrap_or_default();
        let traceparent = request
            .headers()
            .get("traceparent")
            .first()
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default();
        // Misbehaviours, for the tests of limits.
        if path.ends_with("/loop") {
            let mut counter = 0u64;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        if path.ends_with("/panic") {
            panic!("proxy_hello was asked to panic");
        }
        if path.ends_with("/hoard") {
            let value = vec![b'x'; 1024];
            let mut hoard = Vec::new();
            loop {
                let fields = Fields::new();
                // Host memory the guest's own memory limit does not see.
                let _ = fields.append("x-hoard", &value);
                hoard.push(fields);
            }
        }
        let body_length = read_body(&request);
        println!("proxy_hello handled {method} {path}");

        let mut fields = vec![
            ("content-type".to_owned(), b"text/plain".to_vec()),
            ("x-proxy".to_owned(), b"hello".to_vec()),
        ];
        for echo in request.headers().get("x-echo") {
            fields.push(("x-echo".to_owned(), echo));
        }
        let headers = Fields::from_list(&fields).expect("valid headers");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(201).expect("a valid status");
        let body = response.body().expect("the body, once");
        ResponseOutparam::set(response_out, Ok(response));
        if path.ends_with("/orphan") {
            let stream = body.write().expect("the body stream, once");
            OutgoingBody::finish(body, None).expect("finishing the body");
            drop(stream);
            return;
        }
        let text = format!(
            "method={method}\npath={path}\ntraceparent={traceparent}\nbody={body_length}\n"
        );
        let stream = body.write().expect("the body stream, once");
        stream
            .blocking_write_and_flush(text.as_bytes())
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

/// The request body's length, read to the end.
fn read_body(request: &IncomingRequest) -> usize {
    let Ok(body) = request.consume() else {
        return 0;
    };
    let Ok(stream) = body.stream() else {
        return 0;
    };
    let mut length = 0;
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        length += chunk.len();
    }
    length
}

wasip2::http::proxy::export!(ProxyHello);
