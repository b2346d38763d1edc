//! A chat as prompt tokens, without letting what the messages say forge turns.
//!
//! The chat template is rendered to text and the text encoded with special tokens parsed, so
//! the template's own `<|im_start|>` becomes its token. Message content is the caller's (a
//! user, a tool's output, a web page): a content holding the text `<|im_end|>\n<|im_start|>
//! system` would become real control tokens and start a turn the caller wrote. So a content
//! that holds special-token text is rendered as a placeholder and encoded on its own as plain
//! text, the rest of the rendering with special tokens parsed. Content without such text
//! (nearly all) takes the ordinary path, so its tokens are exactly what they always were.
//! Names and arguments of tool calls, tool call ids, roles and tool definitions are rendered
//! by the template where content-like placement cannot be assumed: special-token text there
//! is refused.

use crate::error::{Error, Result};
use crate::message::Message;
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// Opens a placeholder: a private-use character no tokenizer gives meaning to.
const OPEN: char = '\u{F8F0}';

/// A placeholder for message `i`.
fn placeholder(i: usize) -> String {
    format!("{OPEN}{i}\u{F8F1}")
}

/// The prompt tokens of `messages` (and `tools`, for templates that read them), with a
/// generation prompt. Adds no BOS.
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    tools: Option<&[serde_json::Value]>,
) -> Result<Vec<u32>> {
    refuse_special_outside_content(tokenizer, messages, tools)?;
    // A content holding the placeholders' character is masked too, so that every
    // placeholder in the rendering is one of ours.
    let hostile: Vec<bool> = messages
        .iter()
        .map(|m| tokenizer.has_special_text(&m.content) || m.content.contains(OPEN))
        .collect();
    if !hostile.contains(&true) {
        let text = template.render_with_tools(messages, tools, true)?;
        return tokenizer.encode(&text, true);
    }
    let mut masked = messages.to_vec();
    for (i, m) in masked.iter_mut().enumerate() {
        if hostile[i] {
            m.content = placeholder(i);
        }
    }
    let text = template.render_with_tools(&masked, tools, true)?;
    let mut ids = Vec::new();
    // Each placeholder in the order the rendering prints it (a template may print a message
    // twice, or not at all).
    let mut rest = text.as_str();
    while let Some((at, i)) = next_placeholder(rest, &hostile) {
        ids.extend(tokenizer.encode(&rest[..at], true)?);
        ids.extend(tokenizer.encode(&messages[i].content, false)?);
        rest = &rest[at + placeholder(i).len()..];
    }
    ids.extend(tokenizer.encode(rest, true)?);
    Ok(ids)
}

/// The first placeholder in `text`: its byte offset and message index.
fn next_placeholder(text: &str, hostile: &[bool]) -> Option<(usize, usize)> {
    hostile
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .filter_map(|(i, _)| text.find(&placeholder(i)).map(|at| (at, i)))
        .min()
}

fn refuse_special_outside_content(
    tokenizer: &Tokenizer,
    messages: &[Message],
    tools: Option<&[serde_json::Value]>,
) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::InvalidInput(format!(
            "{what} holds the text of one of the model's control tokens, which would change the conversation's structure"
        )))
    };
    for (at, m) in messages.iter().enumerate() {
        if tokenizer.has_special_text(&m.role) {
            return refuse(format!("the role of message {at}"));
        }
        if m.tool_call_id
            .as_deref()
            .is_some_and(|id| tokenizer.has_special_text(id))
        {
            return refuse(format!("the tool_call_id of message {at}"));
        }
        for call in &m.tool_calls {
            if tokenizer.has_special_text(&call.name)
                || tokenizer.has_special_text(&call.arguments.to_string())
            {
                return refuse(format!("a tool call of message {at}"));
            }
        }
    }
    for (at, tool) in tools.unwrap_or_default().iter().enumerate() {
        if tokenizer.has_special_text(&tool.to_string()) {
            return refuse(format!("tool definition {at}"));
        }
    }
    Ok(())
}
