//! Hostile message content through the chat templates models ship (ChatML, Hermes with tools,
//! Llama 3) and into prompt tokens: rendering answers text or a template error, never a
//! panic; and no content, whatever it holds, becomes a control token (it cannot forge a
//! turn). The input's first byte picks the template, the rest is split at NUL into message
//! contents with alternating roles.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slmfn_models::template::ChatTemplate;
use slmfn_models::testing::{HERMES_TEMPLATE, LLAMA3_TEMPLATE, TinyModel};
use slmfn_models::{Message, Model};

fn model() -> &'static (Model, tempfile::TempDir) {
    static MODEL: OnceLock<(Model, tempfile::TempDir)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tiny.gguf");
        TinyModel::default().write(&path).expect("tiny model");
        (Model::load(&path).expect("tiny model loads"), dir)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&pick, rest)) = bytes.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let messages: Vec<Message> = text
        .split('\0')
        .take(32)
        .enumerate()
        .map(|(i, content)| match i % 3 {
            0 => Message::user(content),
            1 => Message::assistant(content),
            _ => Message::system(content),
        })
        .collect();
    let template = match pick % 3 {
        0 => ChatTemplate::chatml("<s>", "</s>"),
        1 => ChatTemplate::new(HERMES_TEMPLATE, "<s>", "</s>").expect("Hermes compiles"),
        _ => ChatTemplate::new(LLAMA3_TEMPLATE, "<s>", "</s>").expect("Llama 3 compiles"),
    };
    let _ = template.render(&messages, true);
    // The tiny model's own template (ChatML): three turns' worth of control tokens at most
    // per message plus the generation prompt, whatever the content says.
    let (model, _) = model();
    if let Ok(ids) = model.encode_chat(&messages) {
        let tokenizer = model.tokenizer();
        let controls = ids
            .iter()
            .filter(|&&id| tokenizer.kind(id).is_some_and(|k| k.is_special()))
            .count();
        // Each message: <|im_start|> and <|im_end|>; the default system turn the tiny
        // template adds: two more; the generation prompt: one; a BOS: one.
        assert!(
            controls <= 2 * messages.len() + 4,
            "{controls} control tokens for {} messages",
            messages.len()
        );
    }
});
