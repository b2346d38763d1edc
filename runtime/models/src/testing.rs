//! A tiny llama-family model (llama, qwen2 or qwen3) written as a real GGUF file, for tests
//! (feature `test-util`).
//!
//! Random weights (seeded, so the file and every greedy completion are reproducible), the real
//! GGUF format written by candle's `gguf_file::write`, a byte-level BPE vocabulary with merges,
//! special tokens and a ChatML chat template — everything the loader reads from SmolLM2, at a
//! size that loads in milliseconds.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tokenizer::{byte_level, byte_level_bytes};

/// The chat template written into tiny models: ChatML with a default system turn, like SmolLM2.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}\
{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\\nYou are tiny.<|im_end|>\\n' }}{% endif %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A chat template with tool support in the Hermes style, as Qwen2.5-Instruct's: the tools as
/// JSON lines inside `<tools>` in the system turn, calls as `<tool_call>` blocks, results as
/// `<tool_response>` blocks in a user turn.
pub const HERMES_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are tiny.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are tiny.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// A chat template with tool support in the style of Llama 3.1/3.2-Instruct's: the tools as
/// indented JSON in the first user turn, calls as `{"name": ..., "parameters": ...}`, results
/// in `ipython` turns.
pub const LLAMA3_TEMPLATE: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "You are tiny." %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools is not none %}
    {%- set first_user_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {{- message.content }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// Control tokens at the start of the vocabulary, as in SmolLM2.
pub const TINY_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// A user-defined token: matched in any text, printed verbatim.
pub const TINY_USER_DEFINED: &str = "<tool>";

/// BPE merges of the tiny vocabulary, in rank order, as plain text pairs (a space is `" "`).
const MERGES: &[(&str, &str)] = &[
    (" ", "t"),
    ("h", "e"),
    (" t", "he"),
    ("i", "n"),
    (" ", "a"),
    ("e", "r"),
    ("o", "n"),
    (" ", "s"),
    ("r", "e"),
    ("a", "t"),
    ("e", "n"),
    (" ", "w"),
    ("o", "r"),
    ("l", "l"),
    (" ", "c"),
    ("e", "s"),
    (" ", "o"),
    ("i", "s"),
    ("he", "ll"),
    ("hell", "o"),
    (" w", "or"),
    ("l", "d"),
    (" wor", "ld"),
    ("\n", "\n"),
    (" ", " "),
];

/// Shape and content of a tiny model.
#[derive(Clone, Debug)]
pub struct TinyModel {
    /// Seed of the random weights.
    pub seed: u64,
    /// `llama.context_length`.
    pub context_length: usize,
    /// `tokenizer.ggml.eos_token_id` (default: `<|im_end|>`).
    pub eos_token_id: u32,
    /// `tokenizer.chat_template`; `None` leaves the key out (the loader falls back to ChatML).
    pub chat_template: Option<String>,
    /// `general.architecture`. `qwen2` adds q/k/v biases; `qwen3` adds per-head q/k norms and
    /// heads twice as wide as `embedding_length / head_count` (`attention.key_length`), as
    /// Qwen3 has; any other name writes a llama.
    pub architecture: String,
    /// Multiplies the output projection: small values make the next-token distribution flat,
    /// so different seeds sample different tokens.
    pub output_scale: f32,
}

impl Default for TinyModel {
    fn default() -> Self {
        Self {
            seed: 0,
            context_length: 128,
            eos_token_id: 2,
            chat_template: Some(TINY_CHAT_TEMPLATE.to_string()),
            architecture: "llama".to_string(),
            output_scale: 0.2,
        }
    }
}

/// Width of the residual stream.
const DIM: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 128;
const BLOCKS: usize = 2;
/// Head width of the tiny Qwen3: not `DIM / HEADS`, to exercise `attention.key_length`.
const QWEN3_HEAD_DIM: usize = 32;

impl TinyModel {
    /// The vocabulary: token texts (byte-level form) and their GGUF token types.
    pub fn vocab() -> (Vec<String>, Vec<i32>) {
        let mut tokens: Vec<String> = TINY_SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut types = vec![3; tokens.len()];
        for b in 0..=255u8 {
            tokens.push(byte_level_bytes(&[b]));
            types.push(1);
        }
        for (a, b) in MERGES {
            tokens.push(byte_level(&format!("{a}{b}")));
            types.push(1);
        }
        tokens.push(TINY_USER_DEFINED.to_string());
        types.push(4);
        (tokens, types)
    }

    /// Writes the model to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        self.try_write(path.as_ref()).map_err(std::io::Error::other)
    }

    fn try_write(&self, path: &Path) -> candle_core::Result<()> {
        let (tokens, types) = Self::vocab();
        let vocab = tokens.len();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut random = |rows: usize, cols: usize, scale: f32, dtype: GgmlDType| {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect();
            QTensor::quantize(&Tensor::from_vec(data, (rows, cols), &Device::Cpu)?, dtype)
        };
        let ones = |n: usize| {
            QTensor::quantize(
                &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
                GgmlDType::F32,
            )
        };
        // `n` floats around `offset`, from one random row.
        let vector = |row: QTensor, offset: f64| -> candle_core::Result<QTensor> {
            let v = (row.dequantize(&Device::Cpu)?.squeeze(0)? + offset)?;
            QTensor::quantize(&v, GgmlDType::F32)
        };
        let arch = self.architecture.as_str();
        let head_dim = if arch == "qwen3" {
            QWEN3_HEAD_DIM
        } else {
            DIM / HEADS
        };
        let (q_dim, kv_dim) = (HEADS * head_dim, KV_HEADS * head_dim);
        let matrix_scale = 1.0 / (DIM as f32).sqrt() * 1.7;
        let mut tensors: Vec<(String, QTensor)> = vec![
            (
                "token_embd.weight".into(),
                random(vocab, DIM, 1.0, GgmlDType::Q8_0)?,
            ),
            ("output_norm.weight".into(), ones(DIM)?),
            (
                "output.weight".into(),
                random(vocab, DIM, self.output_scale, GgmlDType::Q8_0)?,
            ),
        ];
        for i in 0..BLOCKS {
            let q41 = GgmlDType::Q4_1;
            let layer = [
                ("attn_norm", ones(DIM)?),
                ("ffn_norm", ones(DIM)?),
                ("attn_q", random(q_dim, DIM, matrix_scale, q41)?),
                ("attn_k", random(kv_dim, DIM, matrix_scale, q41)?),
                ("attn_v", random(kv_dim, DIM, matrix_scale, q41)?),
                ("attn_output", random(DIM, q_dim, matrix_scale, q41)?),
                ("ffn_gate", random(FFN, DIM, matrix_scale, q41)?),
                ("ffn_up", random(FFN, DIM, matrix_scale, q41)?),
                ("ffn_down", random(DIM, FFN, matrix_scale, q41)?),
            ];
            for (name, t) in layer {
                tensors.push((format!("blk.{i}.{name}.weight"), t));
            }
            let f32 = GgmlDType::F32;
            if arch == "qwen2" {
                for (name, n) in [("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
                    let bias = vector(random(1, n, 0.5, f32)?, 0.0)?;
                    tensors.push((format!("blk.{i}.{name}.bias"), bias));
                }
            }
            if arch == "qwen3" {
                for name in ["attn_q_norm", "attn_k_norm"] {
                    // Around 1 and not 1, so that applying the weights (or not) shows.
                    let weight = vector(random(1, head_dim, 0.5, f32)?, 1.0)?;
                    tensors.push((format!("blk.{i}.{name}.weight"), weight));
                }
            }
        }

        let merges = MERGES
            .iter()
            .map(|(a, b)| Value::String(format!("{} {}", byte_level(a), byte_level(b))))
            .collect();
        let u32v = |v: usize| Value::U32(v as u32);
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("general.name".into(), Value::String("tiny".into())),
            (format!("{arch}.context_length"), u32v(self.context_length)),
            (format!("{arch}.embedding_length"), u32v(DIM)),
            (format!("{arch}.block_count"), u32v(BLOCKS)),
            (format!("{arch}.feed_forward_length"), u32v(FFN)),
            (format!("{arch}.attention.head_count"), u32v(HEADS)),
            (format!("{arch}.attention.head_count_kv"), u32v(KV_HEADS)),
            (format!("{arch}.rope.dimension_count"), u32v(head_dim)),
            (format!("{arch}.attention.key_length"), u32v(head_dim)),
            (format!("{arch}.attention.value_length"), u32v(head_dim)),
            (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (format!("{arch}.vocab_size"), u32v(vocab)),
            // Read by candle-transformers' `quantized_qwen3` only: `f32` rotary tables (its
            // default, `f16`, rounds the angles).
            ("general.dtype".into(), Value::U32(0)),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.merges".into(), Value::Array(merges)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            (
                "tokenizer.ggml.eos_token_id".into(),
                Value::U32(self.eos_token_id),
            ),
            ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ];
        if let Some(template) = &self.chat_template {
            metadata.push((
                "tokenizer.chat_template".into(),
                Value::String(template.clone()),
            ));
        }
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = BufWriter::new(File::create(path)?);
        gguf_file::write(&mut out, &metadata, &tensors)?;
        std::io::Write::flush(&mut out)?;
        Ok(())
    }
}
