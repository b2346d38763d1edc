//! Benchmark guest: the smallest useful agent, 200 "hello" (text/plain) for every request, and
//! a no-op `on_event` (accepted, no reply: 202).

use slmfn_sdk::{CloudEvent, Error, Request, Response, export_agent};

fn handle(_req: Request) -> Result<Response, Error> {
    Ok(Response::text("hello"))
}

fn on_event(_event: CloudEvent) -> Result<Option<CloudEvent>, Error> {
    Ok(None)
}

export_agent!(handle, on_event = on_event);
