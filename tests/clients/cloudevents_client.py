"""The official Python CloudEvents SDK (`cloudevents` 2.x, `cloudevents.core`) against a runtime
serving the testbed guest with a catch-all trigger.

Usage: cloudevents_client.py BASE_URL CONFORMANCE_DIR

Checks, printing one line per check and exiting non-zero on the first failure:
- binary, structured and batched events (the batch is a JSON array of the SDK's JSON format)
  get replies that parse with the SDK, with the expected type and source and the data echoed;
- the CloudEvents conformance vectors (v1.yaml, v1_minimum.yaml) round-trip through the
  testbed's echo in the mode they name (minimum vectors: both modes);
- the HTTP-binding scenarios of http-protocol-binding.feature, sent as raw HTTP, come back with
  their attributes and data;
- malformed events get 400 naming the attribute.
"""

import http.client
import json
import re
import sys
import urllib.parse
from pathlib import Path

import yaml
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

BASE = sys.argv[1]
CONFORMANCE = Path(sys.argv[2])
URL = urllib.parse.urlparse(BASE)


def post(path, headers, body):
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=60)
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    conn.close()
    return out


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def reply_of(status, headers, body, what):
    check(status == 200, f"{what}: 200 (got {status} {body[:200]!r})")
    return from_http_event(HTTPMessage(headers, body))


def as_json(data):
    """The SDK hands JSON data back parsed, or as text/bytes; either way, the JSON value."""
    if isinstance(data, bytes):
        data = data.decode()
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


# --- the SDK's three content modes -----------------------------------------------------------

def order_event(id):
    return CloudEvent(
    {
        "id": id,
        "type": "com.example.order.created",
        "source": "https://example.com/shop",
        "subject": "order-42",
        "datacontenttype": "application/json",
        "comexampleextension1": "value",
    },
    {"order": 42},
    )


# Each send has its own id: a repeated (source, id) would get the first reply from dedupe.
for mode, message in [
    ("binary", to_binary_event(order_event("py-binary"))),
    ("structured", to_structured_event(order_event("py-structured"))),
]:
    status, headers, body = post("/events", message.headers, message.body)
    reply = reply_of(status, headers, body, mode)
    check(reply.get_type() == "com.example.order.created.reply", f"{mode}: reply type")
    check(reply.get_source() == "/testbed", f"{mode}: reply source")
    check(reply.get_id() == f"py-{mode}-reply", f"{mode}: reply id")
    check(reply.get_subject() == "order-42", f"{mode}: subject echoed")
    check(reply.get_extension("comexampleextension1") == "value", f"{mode}: extension echoed")
    check(as_json(reply.get_data()) == {"order": 42}, f"{mode}: data echoed")

fmt = JSONFormat()
batch = [
    CloudEvent({"id": f"py-b{i}", "type": "com.example.batch", "source": "/py"}, {"n": i})
    for i in range(3)
]
batch.append(CloudEvent({"id": "py-b-quiet", "type": "testbed.noreply", "source": "/py"}))
body = b"[" + b",".join(fmt.write(e) for e in batch) + b"]"
status, headers, body = post("/", {"content-type": "application/cloudevents-batch+json"}, body)
check(status == 200, f"batch: 200 (got {status} {body[:200]!r})")
check(headers.get("content-type", "").startswith("application/cloudevents-batch+json"), "batch: reply is a batch")
replies = [fmt.read(None, json.dumps(item).encode()) for item in json.loads(body)]
check([r.get_id() for r in replies] == ["py-b0-reply", "py-b1-reply", "py-b2-reply"], "batch: one reply per replying event, in order")
check([as_json(r.get_data()) for r in replies] == [{"n": 0}, {"n": 1}, {"n": 2}], "batch: data echoed")

# --- conformance vectors ---------------------------------------------------------------------


def vector_event(doc):
    attrs = {k: (str(v) if k == "specversion" else v) for k, v in doc["ContextAttributes"].items() if k != "Extensions"}
    if "time" in attrs and not isinstance(attrs["time"], str):
        attrs["time"] = attrs["time"].isoformat().replace("+00:00", "Z")
    for k, v in (doc["ContextAttributes"].get("Extensions") or {}).items():
        attrs[k] = v
    data = doc.get("Data")
    return attrs, data


def send_vector(mode, attrs, data):
    ct = attrs.get("datacontenttype", "application/json")
    payload = data.encode()
    if mode == "binary":
        headers = {f"ce-{k}": v for k, v in attrs.items() if k != "datacontenttype"}
        headers["content-type"] = ct
        # Header values are sent as-is (the vectors' values are plain ASCII, one line).
        headers = {k: v.strip() for k, v in headers.items()}
        body = payload
    else:
        doc = {k: v.strip() if isinstance(v, str) else v for k, v in attrs.items()}
        if ct.startswith("application/json"):
            doc["data"] = json.loads(data)
        else:
            doc["data"] = data
        headers = {"content-type": "application/cloudevents+json"}
        body = json.dumps(doc).encode()
    return post("/events", headers, body)


for name in ["v1.yaml", "v1_minimum.yaml"]:
    docs = [d for d in yaml.safe_load_all((CONFORMANCE / name).read_text()) if d]
    for i, doc in enumerate(docs):
        attrs, data = vector_event(doc)
        modes = [doc["Mode"]] if "Mode" in doc else ["binary", "structured"]
        for mode in modes:
            # A unique id per send (see above); the vector's id plus the mode and index.
            sent = {**attrs, "id": f"{attrs['id']}-{name}-{i}-{mode}"}
            what = f"{name}[{i}] {sent['id']}"
            status, headers, body = send_vector(mode, sent, data)
            reply = reply_of(status, headers, body, what)
            check(reply.get_id() == f"{sent['id']}-reply", f"{what}: id")
            check(reply.get_type() == f"{attrs['type']}.reply", f"{what}: type")
            if "time" in attrs:
                check(reply.get_time().isoformat().replace("+00:00", "Z") == attrs["time"], f"{what}: time")
            for k, v in (doc["ContextAttributes"].get("Extensions") or {}).items():
                got = reply.get_extension(k)
                check(str(got).strip() == str(v).strip(), f"{what}: extension {k}")
            ct = attrs.get("datacontenttype", "application/json")
            check(reply.get_datacontenttype() == ct, f"{what}: datacontenttype {ct}")
            got = reply.get_data()
            if ct.startswith("application/json"):
                check(as_json(got) == json.loads(data), f"{what}: data {got!r}")
            else:
                text = got.decode() if isinstance(got, bytes) else got
                check(text == data, f"{what}: data")

# --- the HTTP binding feature's scenarios, as raw HTTP ---------------------------------------

feature = (CONFORMANCE / "http-protocol-binding.feature").read_text()
scenarios = re.findall(r'Scenario Outline: (.*?)\n.*?"""\n(.*?)"""\n.*?Examples:\n(.*?)(?:\n\n|\Z)', feature, re.S)
check(len(scenarios) == 2, "feature: two scenario outlines")
for k, (title, request, examples) in enumerate(scenarios):
    content_types = [row.strip().strip("|").strip() for row in examples.strip().splitlines()[1:]]
    for n, ct in enumerate(content_types):
        raw = re.sub(r"^ {8}", "", request.replace("<contentType>", ct), flags=re.M)
        event_id = f"1234-1234-1234-{k}-{n}"
        raw = raw.replace("1234-1234-1234", event_id)
        head, _, body = raw.partition("\n\n")
        lines = head.splitlines()[1:]
        headers = dict(line.split(": ", 1) for line in lines)
        headers.pop("Host", None)
        headers.pop("Content-Length", None)
        status, rheaders, rbody = post("/events", headers, body.encode())
        what = f"feature {title.split('(')[0].strip()} ({ct})"
        reply = reply_of(status, rheaders, rbody, what)
        check(reply.get_id() == f"{event_id}-reply", f"{what}: id")
        check(reply.get_time().isoformat().replace("+00:00", "Z") == "2018-04-05T03:56:24Z", f"{what}: time")
        want_ct = ct if "cloudevents" not in ct else "application/json"
        check(reply.get_datacontenttype() == want_ct, f"{what}: datacontenttype")
        check(as_json(reply.get_data()) == {"message": "Hello World!"}, f"{what}: data")

# --- malformed events ------------------------------------------------------------------------

good = {"ce-specversion": "1.0", "ce-id": "m-1", "ce-source": "/py", "ce-type": "testbed.count"}
for missing in ["ce-id", "ce-source", "ce-type"]:
    headers = {k: v for k, v in good.items() if k != missing}
    status, _, body = post("/events", headers, b"")
    check(status == 400 and missing.encode() in body, f"binary without {missing}: 400 naming it ({status} {body!r})")
status, _, body = post("/events", {**good, "ce-specversion": "0.1"}, b"")
check(status == 400 and b"0.1" in body, f"unknown specversion: 400 ({status} {body!r})")
status, _, body = post("/events", {"content-type": "application/json"}, b"{}")
check(status == 400 and b"ce-specversion" in body, f"not an event: 400 ({status} {body!r})")
structured = {"content-type": "application/cloudevents+json"}
for doc, needle in [
    ({"id": "m-2", "source": "/py", "type": "testbed.count"}, b"specversion"),
    ({"specversion": "1.0", "source": "/py", "type": "testbed.count"}, b"id"),
    ({"specversion": "1.0", "id": "m-3", "type": "testbed.count"}, b"source"),
    ({"specversion": "2.0", "id": "m-4", "source": "/py", "type": "testbed.count"}, b"2.0"),
]:
    status, _, body = post("/events", structured, json.dumps(doc).encode())
    check(status == 400 and needle in body, f"structured {sorted(doc)}: 400 naming {needle!r} ({body!r})")
status, _, body = post("/events", structured, b'{"specversion": "1.0", "id": ')
check(status == 400 and b"JSON" in body, f"bad JSON: 400 ({body!r})")
print("all cloudevents checks passed", flush=True)
