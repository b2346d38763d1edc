"""Writes the agent-accuracy section of benches/RESULTS.md from accuracy.py's JSON.

    python3 benches/agent/render.py RESULTS_JSON benches/RESULTS.md COMMIT
"""

import json
import sys
import time

BEGIN, END = "<!-- agent:begin -->", "<!-- agent:end -->"


def main():
    report_path, results_path, commit = sys.argv[1:4]
    report = json.load(open(report_path))
    lines = [
        BEGIN,
        "## Tool-selection accuracy (issue 8)",
        "",
        f"`benches/agent.sh` at commit `{commit}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"SmolLM2-135M-Instruct Q4_1, {report['tasks']} tasks over {report['tools']} tools "
        "(`benches/agent/tasks.json`: support tickets, FAQ, CI builds, market prices; two confusable "
        "pairs), greedy, every tool offered, a call required. *valid*: the call names a tool and its "
        "arguments are a JSON object; *right*: the expected tool with the expected arguments. The "
        "held-out phrasings were not used to tune anything.",
        "",
        "| side | split | tasks | valid | right | median s / task |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['side']} | {row['split']} | {row['tasks']} | {row['valid']} "
            f"({100 * row['valid'] / row['tasks']:.0f} %) | {row['right']} "
            f"({100 * row['right'] / row['tasks']:.0f} %) | {row['median_seconds']:.2f} |"
        )
    lines += ["", END]
    section = "\n".join(lines)
    try:
        text = open(results_path).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(results_path, "w").write(text)


if __name__ == "__main__":
    main()
