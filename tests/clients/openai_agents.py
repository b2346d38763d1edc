"""An OpenAI-style agent framework against the runtime: the OpenAI Agents SDK
(`openai-agents`) over `/v1/chat/completions`, unchanged, with two function tools.

Run by `tests/all/openai.rs` against the real SmolLM2; by hand:

    python3 tests/clients/openai_agents.py --base-url http://127.0.0.1:8080/v1 \
        --api-key "$SLMFN_TOKEN" --model smollm2

The agent must call `get_price` with the ticker the user wrote, get its result back, and end
with a text answer. Exits non-zero with a message on the first failed check; prints one JSON
summary line on success.
"""

import argparse
import json

import agents
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

CALLS = []


@function_tool
def get_price(ticker: str) -> str:
    """Latest market price of a stock ticker.

    Args:
        ticker: Ticker symbol such as AAPL.
    """
    CALLS.append(("get_price", ticker))
    return json.dumps({"ticker": ticker, "price": 12.5, "currency": "USD"})


@function_tool
def search_faq(query: str) -> str:
    """Search the help-center FAQ.

    Args:
        query: What to search for.
    """
    CALLS.append(("search_faq", query))
    return "Refunds take five working days."


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)
    agent = Agent(
        name="prices",
        instructions="You answer questions about stock prices. Use the tools.",
        tools=[get_price, search_faq],
        model=OpenAIChatCompletionsModel(model=args.model, openai_client=client),
        # A call first; the SDK resets the choice after a tool ran, so the model then answers.
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=60),
    )
    result = Runner.run_sync(agent, "What is the price of ACME stock?", max_turns=4)
    check(CALLS == [("get_price", "ACME")], f"tool calls: {CALLS}")
    output = result.final_output
    check(isinstance(output, str) and output.strip(), f"final output: {output!r}")
    print(json.dumps({"agents_version": agents.__version__, "calls": CALLS, "final_output": output}))


if __name__ == "__main__":
    main()
