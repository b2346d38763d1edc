"""The llama.cpp side of benches/scale.sh, through llama-cpp-python: from process exec, the
same work as ci-triage's answer to a `dev.ci.build.failed` event (run driver.py, not this).

  llama_cold.py MODEL REQUEST_JSON THREADS

REQUEST_JSON holds `messages` (ci-triage's system and user turns), `schema` (its answer's JSON
Schema) and `max_tokens`. Prints one JSON line per step: imported, loaded (the `Llama(...)`
constructor), first_token, done (with the answer and its token count). The chat goes through
the model's own template from the GGUF and llama.cpp's grammar from the same JSON Schema,
greedy (temperature 0), as slmfn answers.
"""

import json
import sys
import time

T0 = time.perf_counter()

from llama_cpp import Llama  # noqa: E402


def out(event, **kv):
    print(json.dumps({"event": event, "t": time.perf_counter() - T0, **kv}), flush=True)


def main():
    model, request, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out("imported")
    with open(request) as f:
        req = json.load(f)
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                verbose=False)
    out("loaded")
    text, tokens = "", 0
    stream = llm.create_chat_completion(
        messages=req["messages"], max_tokens=req["max_tokens"], temperature=0.0,
        response_format={"type": "json_object", "schema": req["schema"]}, stream=True)
    for chunk in stream:
        delta = chunk["choices"][0]["delta"].get("content")
        if delta:
            if tokens == 0:
                out("first_token")
            tokens += 1
            text += delta
    out("done", answer=text, tokens=tokens)


if __name__ == "__main__":
    main()
