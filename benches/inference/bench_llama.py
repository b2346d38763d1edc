"""The llama.cpp side of benches/inference.sh, through llama-cpp-python.

Prints one JSON object per line for driver.py (run that, not this directly). It mirrors
runtime/models/examples/inference_bench.rs step for step, on the same token ids:

  bench_llama.py generate MODEL TOKENS_JSON GEN RUNS THREADS
      load (timed: the `Llama(...)` constructor), then RUNS greedy generations of GEN tokens
      from TOKENS_JSON, end-of-generation ignored (the loop never looks at it)
  bench_llama.py prompt-cache MODEL TOKENS_JSON B_JSON RUNS THREADS
      per run: time to first token of B from an empty context, then of B after the prompt of
      TOKENS_JSON, keeping the prefix the two share (llama-cpp-python's prompt reuse, as
      `Llama.generate` does it: rewind `n_tokens`, `eval` drops the KV cells past it)
  bench_llama.py cold MODEL TOKENS_JSON THREADS
      import, load, evaluate the prompt and sample one token, printing a timestamped line at
      each step: the process-exec -> first-token path, measured by the driver from outside

Timings as slmfn's `Usage` defines them: prompt = evaluating the prompt; TTFT = start of the
call -> first token sampled; generation tok/s = (GEN - 1) tokens / (end - first token).
Sampling is llama.cpp's own greedy sampler (native code, as `Llama.generate` would use).
"""

import json
import os
import sys
import time

T_START = time.perf_counter()

import llama_cpp  # noqa: E402
from llama_cpp import Llama  # noqa: E402

T_IMPORTED = time.perf_counter()

# Context window: room for the 200 + 128 tokens of the bench and the chat prompts, small enough
# that the (preallocated) KV cache does not dominate the RSS. llama-cpp-python's other defaults
# are kept: n_batch 512, flash attention off, mmap on.
N_CTX = 1024


def out(**kv):
    print(json.dumps(kv), flush=True)


def load(model, threads):
    t0 = time.perf_counter()
    llm = Llama(
        model_path=model,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=N_CTX,
        n_batch=512,
        verbose=False,
    )
    return llm, time.perf_counter() - t0


def one_run(llm, sampler, prompt, gen):
    """Greedy generation of `gen` tokens after `prompt`; returns timings and the tokens."""
    ctx = llm._ctx.ctx
    llm.reset()
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    llm.eval(prompt)
    t_prompt = time.perf_counter()
    token = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
    t_first = time.perf_counter()
    tokens = [token]
    while len(tokens) < gen:
        llm.eval([token])
        token = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
        tokens.append(token)
    t_end = time.perf_counter()
    perf = llama_cpp.llama_perf_context(ctx)
    return {
        "prompt_tokens": len(prompt),
        "completion_tokens": len(tokens),
        "prompt_s": t_prompt - t0,
        "ttft_s": t_first - t0,
        "total_s": t_end - t0,
        "prompt_tps": len(prompt) / (t_prompt - t0),
        "gen_tps": (len(tokens) - 1) / (t_end - t_first) if len(tokens) > 1 else 0.0,
        # llama.cpp's own counters (native time only, no Python): a check on the loop's overhead.
        "native_prompt_tps": perf.n_p_eval / (perf.t_p_eval_ms / 1000) if perf.t_p_eval_ms else 0.0,
        "native_gen_tps": perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms else 0.0,
        "tokens": tokens,
    }


def prompt_cache_run(llm, sampler, a, b):
    """TTFT of `b` fresh, then after `a` with their common prefix (all of `b` but its last token
    at most) reused, as slmfn's session prompt cache does."""
    fresh = one_run(llm, sampler, b, 1)
    llm.reset()
    llm.eval(a)
    keep = min(len(os.path.commonprefix([a, b])), len(b) - 1)
    t0 = time.perf_counter()
    llm.n_tokens = keep
    llm.eval(b[keep:])
    token = llama_cpp.llama_sampler_sample(sampler, llm._ctx.ctx, -1)
    cached_s = time.perf_counter() - t0
    return {"fresh_ttft_s": fresh["ttft_s"], "cached_ttft_s": cached_s, "cached_tokens": keep,
            "prompt_tokens": len(b), "fresh_token": fresh["tokens"][0], "cached_token": token}


def main():
    mode = sys.argv[1]
    model = sys.argv[2]
    with open(sys.argv[3]) as f:
        prompt = json.load(f)
    if mode == "generate":
        gen, runs, threads = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        llm, load_s = load(model, threads)
        out(
            event="load",
            load_s=load_s,
            import_s=T_IMPORTED - T_START,
            version=llama_cpp.__version__,
            threads=threads,
            n_ctx=N_CTX,
            system_info=llama_cpp.llama_print_system_info().decode(errors="replace"),
        )
        sampler = llama_cpp.llama_sampler_init_greedy()
        for run in range(runs):
            out(event="run", run=run, **one_run(llm, sampler, prompt, gen))
        llama_cpp.llama_sampler_free(sampler)
        out(event="end")
    elif mode == "prompt-cache":
        with open(sys.argv[4]) as f:
            b = json.load(f)
        runs, threads = int(sys.argv[5]), int(sys.argv[6])
        llm, load_s = load(model, threads)
        out(event="load", load_s=load_s)
        sampler = llama_cpp.llama_sampler_init_greedy()
        for run in range(runs):
            out(event="run", run=run, **prompt_cache_run(llm, sampler, prompt, b))
        llama_cpp.llama_sampler_free(sampler)
        out(event="end")
    elif mode == "cold":
        threads = int(sys.argv[4])
        out(event="imported", t=T_IMPORTED - T_START)
        llm, load_s = load(model, threads)
        out(event="loaded", t=time.perf_counter() - T_START, load_s=load_s)
        sampler = llama_cpp.llama_sampler_init_greedy()
        r = one_run(llm, sampler, prompt, 1)
        out(event="first_token", t=time.perf_counter() - T_START, ttft_s=r["ttft_s"],
            token=r["tokens"][0])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
