"""Structured output and tool calling through the official `openai` Python client.

Run by `tests/all/openai.rs` against the real SmolLM2 (with `jsonschema` in the same venv); by
hand:

    python3 tests/clients/openai_tools.py --base-url http://127.0.0.1:8080/v1 \
        --api-key "$SLMFN_TOKEN" --model smollm2

Exits non-zero with a message on the first failed check; prints one JSON summary line on success.
"""

import argparse
import json

import jsonschema
import openai
import pydantic

TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "login", "outage", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["category", "priority", "summary"],
    "additionalProperties": False,
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_price",
            "description": "Latest market price of a stock ticker",
            "parameters": {
                "type": "object",
                "properties": {"ticker": {"type": "string", "maxLength": 8}},
                "required": ["ticker"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_faq",
            "description": "Search the help-center FAQ",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 60}},
                "required": ["query"],
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_call(call):
    """A call names a tool and its arguments validate against that tool's schema."""
    check(call.type == "function", f"call type: {call}")
    check(call.id, f"call id: {call}")
    name = call.function.name
    check(name in SCHEMAS, f"unknown tool {name!r}")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[name])
    return name


class Ticket(pydantic.BaseModel):
    category: str
    priority: int


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)
    model = args.model
    summary = {"client_version": openai.__version__}

    # json_schema at temperature 0.9 over 20 seeds: every answer parses and validates.
    ticket = [
        {"role": "system", "content": "You triage support tickets. Answer in JSON."},
        {"role": "user", "content": "I was charged twice for my subscription this month!"},
    ]
    categories = set()
    for seed in range(20):
        r = client.chat.completions.create(
            model=model,
            messages=ticket,
            temperature=0.9,
            seed=seed,
            max_tokens=80,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "ticket", "schema": TICKET_SCHEMA, "strict": True},
            },
        )
        choice = r.choices[0]
        check(choice.finish_reason == "stop", f"seed {seed}: {choice}")
        value = json.loads(choice.message.content)
        jsonschema.validate(value, TICKET_SCHEMA)
        categories.add(value["category"])
    summary["categories"] = sorted(categories)

    # json_object: any JSON object.
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give me a JSON object with a name and an age."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_object"},
    )
    if r.choices[0].finish_reason == "stop":
        check(isinstance(json.loads(r.choices[0].message.content), dict), f"{r}")

    # The client's own structured-output helper (a pydantic model, strict json_schema).
    parsed = client.chat.completions.parse(
        model=model, messages=ticket, temperature=0, max_tokens=60, response_format=Ticket
    )
    check(isinstance(parsed.choices[0].message.parsed, Ticket), f"{parsed}")

    question = [{"role": "user", "content": "What is the price of ACME stock?"}]
    # tool_choice required, whole and streamed: the same greedy call.
    r = client.chat.completions.create(
        model=model, messages=question, tools=TOOLS, tool_choice="required", temperature=0,
        max_tokens=60,
    )
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls", f"required: {choice}")
    check(choice.message.content is None, f"content with a call: {choice}")
    check(len(choice.message.tool_calls) == 1, f"{choice}")
    call = choice.message.tool_calls[0]
    summary["required"] = check_call(call)
    summary["required_arguments"] = call.function.arguments

    stream = client.chat.completions.create(
        model=model, messages=question, tools=TOOLS, tool_choice="required", temperature=0,
        max_tokens=60, stream=True,
    )
    streamed = {}
    reasons = []
    for chunk in stream:
        for c in chunk.choices:
            if c.finish_reason:
                reasons.append(c.finish_reason)
            for d in c.delta.tool_calls or []:
                entry = streamed.setdefault(d.index, {"name": "", "arguments": ""})
                if d.function.name:
                    entry["name"] += d.function.name
                if d.function.arguments:
                    entry["arguments"] += d.function.arguments
    check(reasons == ["tool_calls"], f"streamed finish reasons: {reasons}")
    check(
        streamed == {0: {"name": call.function.name, "arguments": call.function.arguments}},
        f"streamed call {streamed} differs from {call}",
    )

    # A named function.
    r = client.chat.completions.create(
        model=model, messages=question, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "search_faq"}},
        temperature=0, max_tokens=60,
    )
    named = r.choices[0].message.tool_calls[0]
    check(check_call(named) == "search_faq", f"named: {named}")

    # auto: text or a valid call, whole and streamed alike.
    for messages in (question, [{"role": "user", "content": "Say hello to me."}]):
        r = client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, tool_choice="auto", temperature=0,
            max_tokens=60,
        )
        c = r.choices[0]
        if c.message.tool_calls:
            check(c.finish_reason == "tool_calls", f"auto: {c}")
            check_call(c.message.tool_calls[0])
        else:
            check(c.finish_reason in ("stop", "length"), f"auto: {c}")
            check(c.message.content and not c.message.content.lstrip().startswith("{"), f"{c}")
        summary.setdefault("auto", []).append("call" if c.message.tool_calls else "text")

    # response_format with tools: under auto every answer is a valid call or JSON valid
    # against the schema, whole and streamed.
    ticket_format = {
        "type": "json_schema",
        "json_schema": {"name": "ticket", "schema": TICKET_SCHEMA, "strict": True},
    }
    kinds = set()
    for seed in range(6):
        r = client.chat.completions.create(
            model=model, messages=ticket, tools=TOOLS, tool_choice="auto", temperature=0.9,
            seed=seed, max_tokens=80, response_format=ticket_format,
        )
        c = r.choices[0]
        if c.message.tool_calls:
            check(c.finish_reason == "tool_calls", f"auto + format, seed {seed}: {c}")
            check_call(c.message.tool_calls[0])
            kinds.add("call")
        else:
            check(c.finish_reason == "stop", f"auto + format, seed {seed}: {c}")
            jsonschema.validate(json.loads(c.message.content), TICKET_SCHEMA)
            kinds.add("json")
    summary["auto_with_format"] = sorted(kinds)
    stream = client.chat.completions.create(
        model=model, messages=ticket, tools=TOOLS, tool_choice="auto", temperature=0,
        max_tokens=80, response_format=ticket_format, stream=True,
    )
    content, calls, reasons = "", 0, []
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            calls += len(c.delta.tool_calls or [])
            if c.finish_reason:
                reasons.append(c.finish_reason)
    if calls:
        check(reasons == ["tool_calls"], f"streamed auto + format: {reasons}")
    else:
        check(reasons == ["stop"], f"streamed auto + format: {reasons} {content!r}")
        jsonschema.validate(json.loads(content), TICKET_SCHEMA)
    # tool_choice none with a format: the answer is the format's JSON.
    r = client.chat.completions.create(
        model=model, messages=ticket, tools=TOOLS, tool_choice="none", temperature=0,
        max_tokens=80, response_format=ticket_format,
    )
    check(r.choices[0].finish_reason == "stop", f"none + format: {r}")
    jsonschema.validate(json.loads(r.choices[0].message.content), TICKET_SCHEMA)

    # A multi-turn exchange: the call, the tool's result, and the answer that follows.
    history = question + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"price": 12.5})},
    ]
    r = client.chat.completions.create(
        model=model, messages=history, tools=TOOLS, tool_choice="none", temperature=0,
        max_tokens=40,
    )
    final = r.choices[0]
    check(final.finish_reason in ("stop", "length"), f"after the tool: {final}")
    check(final.message.content, f"no answer after the tool result: {final}")
    summary["after_tool"] = final.message.content
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
