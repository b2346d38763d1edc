//! Benchmark guest: the smallest useful agent, 200 "hello" (text/plain) for every request.

use slmfn_sdk::{Error, Request, Response, export_agent};

fn handle(_req: Request) -> Result<Response, Error> {
    Ok(Response::text("hello"))
}

export_agent!(handle);
