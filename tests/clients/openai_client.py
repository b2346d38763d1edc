"""The official `openai` Python client against slmfn's OpenAI-compatible API.

Run by `tests/all/openai.rs` (which installs the client into a venv and starts the runtime with
the real SmolLM2); by hand:

    python3 tests/clients/openai_client.py --base-url http://127.0.0.1:8080/v1 \
        --api-key "$SLMFN_TOKEN" --model smollm2

Exits non-zero with a message on the first failed check; prints one JSON summary line on success.
"""

import argparse
import json
import sys

import openai

QUESTION = "What is the capital of France?"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)
    summary = {"client_version": openai.__version__}

    # The model list names the configured model, with the pool's view of it.
    models = client.models.list()
    ids = [m.id for m in models.data]
    check(args.model in ids, f"{args.model} not in /v1/models: {ids}")
    listed = next(m for m in models.data if m.id == args.model)
    check(getattr(listed, "device", None) == "cpu", f"device missing: {listed}")

    # A whole chat completion, greedy.
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(
        model=args.model, messages=messages, temperature=0, max_tokens=48, seed=1
    )
    answer = plain.choices[0].message.content
    check("Paris" in answer, f"answer should mention Paris: {answer!r}")
    check(plain.choices[0].message.role == "assistant", f"role: {plain.choices[0]}")
    check(plain.choices[0].finish_reason in ("stop", "length"), f"finish: {plain.choices[0]}")
    usage = plain.usage
    check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage: {usage}")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage: {usage}")
    check(usage.prompt_tokens_details.cached_tokens == 0, f"nothing cached yet: {usage}")
    summary["answer"] = answer

    # The same request streamed: the same greedy text in chunks, then usage.
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        temperature=0,
        max_tokens=48,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, stream_usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            stream_usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    check(streamed == answer, f"streamed text differs: {streamed!r} vs {answer!r}")
    check(len(pieces) > 1, f"expected several chunks, got {pieces!r}")
    check(finish == plain.choices[0].finish_reason, f"stream finish_reason: {finish}")
    check(stream_usage is not None, "no usage chunk with include_usage")
    check(
        stream_usage.completion_tokens == usage.completion_tokens,
        f"stream usage {stream_usage} vs {usage}",
    )
    # The model's one session kept the prompt: all of it but the last token was reused, and
    # the answer is the same.
    check(
        stream_usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1,
        f"prompt cache: {stream_usage}",
    )
    summary["chunks"] = chunks

    # Embeddings: no embedding model exists, and the client says so clearly.
    try:
        client.embeddings.create(model=args.model, input="hello")
        check(False, "embeddings with a generative model must fail")
    except openai.BadRequestError as e:
        check("not an embedding model" in str(e), f"unclear embeddings error: {e}")
        summary["embeddings_error"] = str(e)
    try:
        client.embeddings.create(model="all-minilm-l6-v2", input=["a", "b"])
        check(False, "embeddings with an unknown model must fail")
    except openai.NotFoundError as e:
        check("no embedding models" in str(e), f"unclear embeddings error: {e}")

    # An unknown chat model is 404, n > 1 is refused.
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        check(False, "an unknown model must fail")
    except openai.NotFoundError as e:
        check(e.body and e.body.get("code") == "model_not_found", f"404 body: {e.body}")
    try:
        client.chat.completions.create(model=args.model, messages=messages, n=2)
        check(False, "n=2 must fail")
    except openai.BadRequestError as e:
        check(e.body and e.body.get("param") == "n", f"400 body: {e.body}")

    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
