"""Tool-selection accuracy of a small model: valid calls and right tool + arguments, per split.

Sides (each greedy, every tool offered, a call required):

- `slmfn, TECHNIQUE[+examples]`: the runtime's OpenAI API (`tools`, `tool_choice: "required"`) through the
  official `openai` client, once per `tool_selection` technique (`grammar`: one grammar over
  all tools; `spans`: + arguments from the request's spans, infeasible tools dropped; `scores`:
  + the tool chosen by calibrated name scores, the runtime's default).
- `llama.cpp`: llama-cpp-python on the same GGUF, the same rendered prompt (the runtime's tool
  block in the system prompt, from `/v1/chat/completions`' own rendering rules mirrored below)
  and a JSON-schema grammar over all tools (`{"name", "arguments"}`): a bare grammar.

Usage (benches/agent.sh runs it and writes benches/RESULTS.md):

    python3 benches/agent/accuracy.py --tasks benches/agent/tasks.json \
        --slmfn-url http://127.0.0.1:8080/v1 [--llama-model PATH] --json-out OUT.json

Prints one line per side and split; writes the raw per-task results to --json-out.
"""

import argparse
import json
import sys
import time


def expected_ok(expected, actual):
    """Whether a call's arguments are the expected ones (see tasks.json's `about`)."""
    if not isinstance(actual, dict):
        return False
    for key, want in expected.items():
        got = actual.get(key)
        if isinstance(want, dict) and "contains" in want:
            if not isinstance(got, str) or not all(w.lower() in got.lower() for w in want["contains"]):
                return False
        elif isinstance(want, str):
            if not isinstance(got, str) or got.strip().lower() != want.lower():
                return False
        elif got != want:
            return False
    return True


def score(task, name, arguments_text):
    """(valid, right) for one answer."""
    try:
        arguments = json.loads(arguments_text) if arguments_text is not None else None
    except ValueError:
        return False, False
    tools = {t["function"]["name"] for t in TOOLS}
    valid = name in tools and isinstance(arguments, dict)
    right = valid and name == task["tool"] and expected_ok(task["arguments"], arguments)
    return valid, right


def run_slmfn(url, model, tasks, technique):
    """`technique` is a `tool_selection` value; with the suffix `+examples` the tools carry
    their worked examples (few-shot), without it they are sent without them; a last suffix
    `@auto` asks with `tool_choice: auto` instead of `required` (a text answer is neither valid
    nor right: every task needs a call)."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=300)
    technique, _, choice = technique.partition("@")
    technique, _, extra = technique.partition("+")
    tools = TOOLS if extra == "examples" else [
        {**t, "function": {k: v for k, v in t["function"].items() if k != "examples"}}
        for t in TOOLS
    ]
    out = []
    for task in tasks:
        t = time.perf_counter()
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": task["request"]}],
            tools=tools,
            tool_choice=choice or "required",
            temperature=0,
            max_tokens=64,
            extra_body={"tool_selection": technique},
        )
        elapsed = time.perf_counter() - t
        calls = r.choices[0].message.tool_calls or []
        name = calls[0].function.name if calls else None
        arguments = calls[0].function.arguments if calls else None
        valid, right = score(task, name, arguments)
        out.append({"request": task["request"], "split": task["split"], "name": name,
                    "arguments": arguments, "valid": valid, "right": right, "seconds": elapsed})
    return out


def tool_block():
    """The runtime's tool block (slmfn_models::tool_call::tool_block, choice `required`)."""
    lines = ["You can call these tools:"]
    for t in TOOLS:
        f = t["function"]
        lines.append(json.dumps({"name": f["name"], "description": f.get("description", ""),
                                 "parameters": f["parameters"]}, separators=(",", ":")))
    return ("\n".join(lines) + "\nTo call a tool, answer with only a JSON object: "
            '{"name": <the tool\'s name>, "arguments": <its arguments>}.')


def run_llama(model_path, tasks, threads):
    from llama_cpp import Llama, LlamaGrammar

    llm = Llama(model_path=model_path, n_ctx=2048, n_threads=threads, verbose=False, seed=0)
    schema = {"anyOf": [{
        "type": "object",
        "properties": {"name": {"const": t["function"]["name"]}, "arguments": t["function"]["parameters"]},
        "required": ["name", "arguments"],
    } for t in TOOLS]}
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    out = []
    for task in tasks:
        t = time.perf_counter()
        r = llm.create_chat_completion(
            messages=[{"role": "system", "content": tool_block()},
                      {"role": "user", "content": task["request"]}],
            temperature=0, max_tokens=64, grammar=grammar,
        )
        elapsed = time.perf_counter() - t
        text = r["choices"][0]["message"]["content"] or ""
        try:
            call = json.loads(text)
            name, arguments = call.get("name"), json.dumps(call.get("arguments"))
        except ValueError:
            name, arguments = None, None
        valid, right = score(task, name, arguments)
        out.append({"request": task["request"], "split": task["split"], "name": name,
                    "arguments": arguments, "valid": valid, "right": right, "seconds": elapsed})
    return out


def summarize(side, results):
    rows = []
    for split in ("dev", "heldout"):
        rs = [r for r in results if r["split"] == split]
        rows.append({"side": side, "split": split, "tasks": len(rs),
                     "valid": sum(r["valid"] for r in rs), "right": sum(r["right"] for r in rs),
                     "median_seconds": sorted(r["seconds"] for r in rs)[len(rs) // 2]})
    return rows


TOOLS = []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--slmfn-url")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--llama-model")
    parser.add_argument("--techniques", default="grammar,spans,scores",
                        help="slmfn's tool_selection values to measure, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", required=True)
    args = parser.parse_args()
    data = json.load(open(args.tasks))
    TOOLS.extend(data["tools"])
    tasks = data["tasks"]
    report = {"tasks": len(tasks), "tools": len(TOOLS), "sides": {}, "summary": []}
    if args.slmfn_url:
        for technique in args.techniques.split(","):
            side = f"slmfn, {technique}"
            results = run_slmfn(args.slmfn_url, args.model, tasks, technique)
            report["sides"][side] = results
            report["summary"] += summarize(side, results)
    if args.llama_model:
        results = run_llama(args.llama_model, tasks, args.threads)
        report["sides"]["llama.cpp + JSON grammar"] = results
        report["summary"] += summarize("llama.cpp + JSON grammar", results)
    for row in report["summary"]:
        print(json.dumps(row))
    json.dump(report, open(args.json_out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
