//! Reading usage out of upstream answers: a whole JSON response, or a server-sent event stream cut into
//! events as it passes (an event is forwarded only once complete, so a usage-only event can be dropped).
//!
//! Anthropic: `message_start` carries `message.usage` (the input side), `message_delta` carries
//! `usage.output_tokens` CUMULATIVELY (each replaces the last, never adds), `message_stop` ends the stream.
//! OpenAI: usage comes in one last chunk with `choices: []` when `stream_options.include_usage` is set, and
//! `data: [DONE]` ends the stream; `prompt_tokens` includes `cached_tokens`.

use serde_json::Value;
use shared::meter::{LlmProvider, TokenUsage};

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// The usage of a whole (non-streamed) response body.
pub fn from_body(provider: LlmProvider, body: &Value) -> Option<TokenUsage> {
    let usage = body.get("usage").filter(|v| v.is_object())?;
    Some(match provider {
        LlmProvider::Anthropic => anthropic(usage, TokenUsage::default()),
        LlmProvider::OpenAi => openai(usage),
    })
}

/// Anthropic's usage object over what was known: present fields replace, absent ones keep.
fn anthropic(usage: &Value, mut t: TokenUsage) -> TokenUsage {
    if let Some(v) = u(usage, "input_tokens") {
        t.input = v;
    }
    if let Some(v) = u(usage, "output_tokens") {
        t.output = v;
    }
    if let Some(v) = u(usage, "cache_read_input_tokens") {
        t.cache_read = v;
    }
    if let Some(v) = u(usage, "cache_creation_input_tokens") {
        t.cache_write = v;
    }
    t
}

fn openai(usage: &Value) -> TokenUsage {
    let prompt = u(usage, "prompt_tokens").unwrap_or(0);
    let cached = usage.get("prompt_tokens_details").and_then(|d| u(d, "cached_tokens")).unwrap_or(0).min(prompt);
    TokenUsage {
        input: prompt - cached,
        output: u(usage, "completion_tokens").unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
    }
}

/// Cuts a byte stream into SSE events (each ending in a blank line) and follows the usage in them.
#[derive(Debug)]
pub struct SseMeter {
    provider: LlmProvider,
    buf: Vec<u8>,
    pub usage: TokenUsage,
    /// Any usage was reported.
    pub reported: bool,
    /// The stream's end marker arrived (`message_stop` / `[DONE]`).
    pub complete: bool,
    /// Drop OpenAI's usage-only chunk: the proxy asked for it, the client did not.
    strip_usage_chunk: bool,
}

impl SseMeter {
    pub fn new(provider: LlmProvider, strip_usage_chunk: bool) -> Self {
        Self {
            provider,
            buf: Vec::new(),
            usage: TokenUsage::default(),
            reported: false,
            complete: false,
            strip_usage_chunk,
        }
    }

    /// Takes a chunk; returns the bytes of the events it completed, to forward.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end).collect();
            if self.observe(&event) {
                out.extend_from_slice(&event);
            }
        }
        out
    }

    /// What is left when the stream ends without a final blank line.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() && self.observe(&rest) { rest } else { Vec::new() }
    }

    /// Follows one event's usage; false when the event is not to be forwarded.
    fn observe(&mut self, event: &[u8]) -> bool {
        let text = String::from_utf8_lossy(event);
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect::<Vec<_>>()
            .join("\n");
        if data.trim() == "[DONE]" {
            self.complete = true;
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else { return true };
        match self.provider {
            LlmProvider::Anthropic => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(usage) = v.get("message").and_then(|m| m.get("usage")) {
                        self.usage = anthropic(usage, self.usage);
                        self.reported = true;
                    }
                }
                Some("message_delta") => {
                    if let Some(usage) = v.get("usage") {
                        self.usage = anthropic(usage, self.usage);
                        self.reported = true;
                    }
                }
                Some("message_stop") => self.complete = true,
                _ => {}
            },
            LlmProvider::OpenAi => {
                if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                    self.usage = openai(usage);
                    self.reported = true;
                    let usage_only = v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                    if usage_only && self.strip_usage_chunk {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// The end of the first complete event in `buf` (after its blank line), if there is one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anthropic_output_tokens_in_message_delta_replace_rather_than_add() {
        let mut m = SseMeter::new(LlmProvider::Anthropic, false);
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":7}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":10}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        // Fed in awkward pieces, as a network would.
        let mut forwarded = Vec::new();
        for piece in stream.as_bytes().chunks(7) {
            forwarded.extend(m.push(piece));
        }
        assert_eq!(forwarded, stream.as_bytes());
        assert_eq!(m.usage, TokenUsage { input: 25, output: 15, cache_read: 7, cache_write: 0 });
        assert!(m.complete);
    }

    #[test]
    fn a_stream_cut_before_message_stop_keeps_what_was_reported_and_is_incomplete() {
        let mut m = SseMeter::new(LlmProvider::Anthropic, false);
        m.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"ty");
        assert_eq!(m.finish().len(), "event: content_block_delta\ndata: {\"ty".len());
        assert_eq!(m.usage.input, 9);
        assert_eq!(m.usage.output, 1);
        assert!(!m.complete);
    }

    #[test]
    fn openais_usage_chunk_is_read_and_dropped_when_the_client_did_not_ask_for_it() {
        let chunks = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut stripped = SseMeter::new(LlmProvider::OpenAi, true);
        let out = String::from_utf8(stripped.push(chunks.as_bytes())).unwrap_or_default();
        assert!(!out.contains("prompt_tokens") && out.contains("\"Hi\"") && out.ends_with("data: [DONE]\n\n"));
        assert_eq!(stripped.usage, TokenUsage { input: 20, output: 5, cache_read: 10, cache_write: 0 });
        assert!(stripped.complete);
        let mut kept = SseMeter::new(LlmProvider::OpenAi, false);
        assert_eq!(kept.push(chunks.as_bytes()), chunks.as_bytes());
    }

    #[test]
    fn a_whole_response_reports_its_usage() {
        let a = json!({"usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 5}});
        assert_eq!(
            from_body(LlmProvider::Anthropic, &a),
            Some(TokenUsage { input: 3, output: 4, cache_read: 0, cache_write: 5 })
        );
        let o = json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
        assert_eq!(
            from_body(LlmProvider::OpenAi, &o),
            Some(TokenUsage { input: 3, output: 4, cache_read: 0, cache_write: 0 })
        );
        assert_eq!(from_body(LlmProvider::OpenAi, &json!({"error": {}})), None);
    }
}
