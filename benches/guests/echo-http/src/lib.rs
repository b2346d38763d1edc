//! Benchmark guest: the `wasi:http/proxy` twin of `echo-agent`, 200 "hello" (text/plain) for
//! every request, served by `wasmtime serve`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const BODY: &[u8] = b"hello";

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        // The same headers as slmfn sends; with a content-length, the host need not chunk.
        let headers = Fields::from_list(&[
            (
                "content-type".to_string(),
                b"text/plain; charset=utf-8".to_vec(),
            ),
            (
                "content-length".to_string(),
                BODY.len().to_string().into_bytes(),
            ),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream taken once");
        out.blocking_write_and_flush(BODY).expect("write body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Echo);
