//! Test plugin: a standard WASI 0.3 `wasi:http/service` component that
//! knows nothing of comb, the twin of `proxy_hello`. It answers every
//! request with what it saw — method, path with query, `traceparent`, body
//! length — and logs one line to stdout; the bytes of an `x-echo` request
//! header come back in an `x-echo` response header, untouched; a path
//! ending in `/loop` loops forever, one ending in `/panic` panics, one
//! ending in `/stall` starts its body and never finishes it;
//! `/service_hello/fetch/HOST:PORT/PATH` makes an outgoing
//! `GET http://HOST:PORT/PATH` with `wasi:http/client` and answers its
//! status and body (502 and the error code when it fails); one ending in
//! `/otel` reports a span `service-work` through `wasi:otel`, under the
//! span the host names as its parent. The body is
//! written by a task of its own after the response is returned, as WASI 0.3
//! services stream.

use wasip3::{
    exports::http::handler::Guest,
    http::{
        client,
        types::{ErrorCode, Fields, Method, Request, Response, Scheme},
    },
    wit_bindgen, wit_future, wit_stream,
};

struct ServiceHello;

impl Guest for ServiceHello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = match request.get_method() {
            Method::Get => "GET".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            other => format!("{other:?}"),
        };
        let path = request.get_path_with_query().unwrap_or_default();
        let headers = request.get_headers();
        let traceparent = headers
            .get("traceparent")
            .first()
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default();
        let echoes = headers.get("x-echo");
        // Misbehaviours, for the tests of limits.
        if path.ends_with("/loop") {
            let mut counter = 0u64;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        if path.ends_with("/panic") {
            panic!("service_hello was asked to panic");
        }
        if path.ends_with("/otel") {
            otel::report_span("service-work");
            return Ok(respond(200, Vec::new(), "otel\n".to_owned()));
        }
        if let Some(target) = path.strip_prefix("/service_hello/fetch/") {
            let (status, text) = fetch(target).await;
            return Ok(respond(status, Vec::new(), text));
        }
        let (body, _trailers) = Request::consume_body(request, wit_future::new(|| Ok(())).1);
        let body_length = read_body(body).await.len();
        println!("service_hello handled {method} {path}");

        let echoes = echoes.into_iter().map(|echo| ("x-echo".to_owned(), echo));
        let text = format!(
            "method={method}\npath={path}\ntraceparent={traceparent}\nbody={body_length}\n"
        );
        if path.ends_with("/stall") {
            return Ok(stall());
        }
        Ok(respond(201, echoes.collect(), text))
    }
}

/// A response whose body starts and then does not end for an hour: its
/// writer sleeps (on the host's clock), holding the stream open.
fn stall() -> Response {
    let (mut body, contents) = wit_stream::new();
    let (trailers_sender, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(contents), trailers);
    wit_bindgen::spawn_local(async move {
        body.write_all(b"partial".to_vec()).await;
        const HOUR_NS: u64 = 3_600 * 1_000_000_000;
        wasip3::clocks::monotonic_clock::wait_for(HOUR_NS).await;
        drop((body, trailers_sender));
    });
    response
}

/// A text response with `x-proxy: hello` and `headers`, its body written by
/// a task that runs on after the handler has returned the response.
fn respond(status: u16, headers: Vec<(String, Vec<u8>)>, text: String) -> Response {
    let mut fields = vec![
        ("content-type".to_owned(), b"text/plain".to_vec()),
        ("x-proxy".to_owned(), b"hello".to_vec()),
    ];
    fields.extend(headers);
    let headers = Fields::from_list(&fields).expect("valid headers");
    let (mut body, contents) = wit_stream::new();
    let (trailers_sender, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(contents), trailers);
    response.set_status_code(status).expect("a valid status");
    wit_bindgen::spawn_local(async move {
        let unwritten = body.write_all(text.into_bytes()).await;
        assert!(unwritten.is_empty(), "the reader went away");
        drop(body);
        drop(trailers_sender);
    });
    response
}

/// `GET http://{target}` through `wasi:http/client`: its status and body,
/// or 502 and the error code.
async fn fetch(target: &str) -> (u16, String) {
    let (authority, path) = target.split_once('/').unwrap_or((target, ""));
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    request.set_scheme(Some(&Scheme::Http)).expect("a scheme");
    request
        .set_authority(Some(authority))
        .expect("an authority");
    let path = format!("/{path}");
    request.set_path_with_query(Some(&path)).expect("a path");
    match client::send(request).await {
        Ok(response) => {
            let status = response.get_status_code();
            let (body, _trailers) = Response::consume_body(response, wit_future::new(|| Ok(())).1);
            let body = read_body(body).await;
            (
                status,
                format!("status={status}\nbody={}", String::from_utf8_lossy(&body)),
            )
        }
        Err(code) => (502, format!("error={code:?}")),
    }
}

/// A body stream read to its end.
async fn read_body(mut stream: wit_bindgen::StreamReader<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let (status, chunk) = stream.read(Vec::with_capacity(64 * 1024)).await;
        bytes.extend_from_slice(&chunk);
        if !matches!(status, wit_bindgen::StreamResult::Complete(_)) {
            return bytes;
        }
    }
}

wasip3::http::service::export!(ServiceHello);

/// A span reported through `wasi:otel`, as a guest's SDK reports one.
mod otel {
    mod bindings {
        wit_bindgen::generate!({
            path: "../../../wit",
            world: "wasi:otel/imports@0.2.0-rc.2",
            generate_all,
        });
    }

    use bindings::wasi::{
        clocks::wall_clock::{self, Datetime},
        otel::{tracing, types},
    };

    /// Starts and ends a span `name` under the host's span.
    pub(crate) fn report_span(name: &str) {
        let host = tracing::outer_span_context();
        let context = tracing::SpanContext {
            trace_id: host.trace_id.clone(),
            span_id: "5e1f".to_owned(),
            trace_flags: host.trace_flags,
            is_remote: false,
            trace_state: Vec::new(),
        };
        tracing::on_start(&context);
        let now: Datetime = wall_clock::now();
        tracing::on_end(&tracing::SpanData {
            span_context: context,
            parent_span_id: host.span_id,
            span_kind: tracing::SpanKind::Internal,
            name: name.to_owned(),
            start_time: now,
            end_time: now,
            attributes: vec![types::KeyValue {
                key: "app.wasi".to_owned(),
                value: "\"0.3\"".to_owned(),
            }],
            events: Vec::new(),
            links: Vec::new(),
            status: tracing::Status::Ok,
            instrumentation_scope: types::InstrumentationScope {
                name: "service_hello".to_owned(),
                version: None,
                schema_url: None,
                attributes: Vec::new(),
            },
            dropped_attributes: 0,
            dropped_events: 0,
            dropped_links: 0,
        });
    }
}
