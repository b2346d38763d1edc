//! A market-analysis agent: the numbers come from a tool, the words from the model.
//!
//! `prices.stats` (a local tool over the shipped `data/prices.csv`: daily closes of ACME, BOLT
//! and CRUX) computes the last close, the 5-, 20- and 60-day returns and the 10- and 30-day
//! moving averages; the model only explains them. Run with
//! `fn deploy --path functions/market-analyst` and
//! `fn invoke market-analyst --data '{"question": "How has ACME been trading?"}'`.

use serde::Deserialize;
use serde_json::json;
use slmfn_sdk::agent::Agent;
use slmfn_sdk::inference::{Params, ToolChoice};
use slmfn_sdk::provider::{ToolResult, arguments, tool};
use slmfn_sdk::tools::ToolError;
use slmfn_sdk::{Error, Request, Response, export_agent};

const SYSTEM: &str = "You are a market analyst. Call prices.stats for the stock the user names, \
then say in one sentence whether it is trending up, down or flat, quoting the tool's numbers.";

/// Daily closes: `date,symbol,close`.
const PRICES: &str = include_str!("../data/prices.csv");

#[derive(Deserialize)]
struct Question {
    question: String,
    max_tokens: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Stats {
    /// The ticker symbol: ACME, BOLT or CRUX.
    symbol: String,
}

fn handle(req: Request) -> Result<Response, Error> {
    let q: Question = req.json()?;
    let params = Params {
        max_tokens: Some(q.max_tokens.unwrap_or(64)),
        temperature: Some(0.0),
        ..Params::default()
    };
    let run = Agent::new(SYSTEM)
        .local_tool(
            tool::<Stats>(
                "prices.stats",
                "Returns and moving averages of a stock's daily closes (ACME, BOLT, CRUX).",
            ),
            stats,
        )
        .first_choice(ToolChoice::Required)
        .max_steps(2)
        .params(params)
        .run(&q.question)?;
    let stats: Vec<_> = run
        .calls()
        .filter_map(|c| c.result.as_ref().ok())
        .filter_map(|r| r.structured.as_deref())
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .collect();
    Response::json(&json!({
        "answer": run.answer,
        "stats": stats,
        "tool_calls": run.calls().map(|c| json!({"name": c.call.name, "arguments": c.call.arguments})).collect::<Vec<_>>(),
    }))
}

/// The closes of `symbol`, oldest first.
fn closes(symbol: &str) -> Vec<(String, f64)> {
    PRICES
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let (date, sym, close) = (fields.next()?, fields.next()?, fields.next()?);
            (sym == symbol).then(|| Some((date.to_string(), close.parse().ok()?)))?
        })
        .collect()
}

fn change(closes: &[(String, f64)], days: usize) -> Option<f64> {
    let last = closes.last()?.1;
    let then = closes.get(closes.len().checked_sub(days + 1)?)?.1;
    Some(((last / then - 1.0) * 1000.0).round() / 10.0)
}

fn average(closes: &[(String, f64)], days: usize) -> Option<f64> {
    let tail = closes.get(closes.len().checked_sub(days)?..)?;
    let mean = tail.iter().map(|(_, c)| c).sum::<f64>() / days as f64;
    Some((mean * 100.0).round() / 100.0)
}

/// `prices.stats`: every figure computed here, none left to the model.
fn stats(args: &str) -> Result<ToolResult, ToolError> {
    let Stats { symbol } = arguments(args)?;
    let symbol = symbol.trim().to_uppercase();
    let series = closes(&symbol);
    let Some((date, last)) = series.last().cloned() else {
        return Ok(ToolResult::error(format!(
            "No prices for {symbol}: the data has ACME, BOLT and CRUX."
        )));
    };
    let (sma10, sma30) = (average(&series, 10), average(&series, 30));
    let trend = match (sma10, sma30) {
        (Some(a), Some(b)) if a > b * 1.01 => "up",
        (Some(a), Some(b)) if a < b * 0.99 => "down",
        _ => "flat",
    };
    let stats = json!({
        "symbol": symbol,
        "date": date,
        "last_close": last,
        "return_5d_pct": change(&series, 5),
        "return_20d_pct": change(&series, 20),
        "return_60d_pct": change(&series, 60),
        "sma_10": sma10,
        "sma_30": sma30,
        "trend": trend,
    });
    let mut result = ToolResult::json(&stats);
    result.content = vec![slmfn_sdk::provider::Content::Text(format!(
        "{symbol} is trending {trend}: {}% over 20 days, {}% over 60 days; it closed at {last} on {date}.",
        fmt(change(&series, 20)),
        fmt(change(&series, 60)),
    ))];
    Ok(result)
}

fn fmt(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| v.to_string())
}

export_agent!(handle);
