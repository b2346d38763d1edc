//! Benchmark guest: the `wasi:http/proxy` twin of `echo-agent`, 200 "hello" (text/plain) for
//! every request, served by `wasmtime serve`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream taken once");
        out.blocking_write_and_flush(b"hello").expect("write body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Echo);
