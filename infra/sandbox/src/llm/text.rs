//! What the sandbox models "generate": sandbox directives in the last user message, the deterministic input token
//! count, and the reply words.

use serde_json::Value;

/// Output tokens a reply has when no `[sandbox:tokens=N]` directive says otherwise (before the `max_tokens` cap).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 24;

/// Tokens each message adds on top of its text (role and framing), as real tokenizers do.
const TOKENS_PER_MESSAGE: u64 = 4;

/// Settings a request carries in its last user message, as `[sandbox:key=value,...]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// `tokens=N`: the reply's length in output tokens (still capped by `max_tokens`).
    pub tokens: Option<u64>,
    /// `cache_read=N`: N prompt tokens were read from the prompt cache.
    pub cache_read: u64,
    /// `cache_write=N`: N prompt tokens were written to the prompt cache (Anthropic reports them).
    pub cache_write: u64,
}

/// Largest value a directive takes, so a typo cannot ask for a stream of billions of events.
const DIRECTIVE_MAX: u64 = 1_000_000;

impl Directives {
    /// Reads every `[sandbox:...]` directive in `text`. An unknown key or a bad number is an error naming it.
    pub fn parse(text: &str) -> Result<Directives, String> {
        let mut out = Directives::default();
        let mut rest = text;
        while let Some(start) = rest.find("[sandbox:") {
            let after = &rest[start + "[sandbox:".len()..];
            let Some(end) = after.find(']') else {
                return Err("a [sandbox:...] directive is missing its closing ']'".into());
            };
            for pair in after[..end].split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(format!("sandbox directive {pair:?} is not key=value"));
                };
                let n: u64 = value.trim().parse().ok().filter(|n| *n <= DIRECTIVE_MAX).ok_or_else(|| {
                    format!("sandbox directive {pair:?} needs a whole number from 0 to {DIRECTIVE_MAX}")
                })?;
                match key.trim() {
                    "tokens" => out.tokens = Some(n),
                    "cache_read" => out.cache_read = n,
                    "cache_write" => out.cache_write = n,
                    other => {
                        return Err(format!(
                            "unknown sandbox directive {other:?}; known: tokens, cache_read, cache_write"
                        ));
                    }
                }
            }
            rest = &after[end + 1..];
        }
        Ok(out)
    }
}

/// The text of a message's `content`: a string, or the `text` of each part of an array, joined by newlines.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// The text of the last message with role `user` (empty when there is none).
pub(crate) fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| msgs.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

fn ceil_quarter(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Tokens of one content value: ceil(chars / 4) of each text piece; a non-text part (image, tool call, ...)
/// counts ceil(chars / 4) of its JSON.
fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(s) => ceil_quarter(s.chars().count()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(text) => ceil_quarter(text.chars().count()),
                None => ceil_quarter(p.to_string().chars().count()),
            })
            .sum(),
        Value::Null => 0,
        other => ceil_quarter(other.to_string().chars().count()),
    }
}

/// The prompt size, in tokens, of an Anthropic Messages or OpenAI chat completions request body. Deterministic:
///
/// - `system` (a string or an array of text blocks): ceil(chars / 4) of each piece;
/// - every message: 4, plus ceil(chars / 4) of each text piece of its `content` (a string or an array of parts;
///   a part without `text` counts ceil(chars / 4) of its JSON);
/// - `tools`, when present: ceil(chars / 4) of its JSON;
/// - plus the `cache_read` and `cache_write` directives of the last user message: they stand for a cached prompt
///   prefix of that many tokens.
///
/// Anthropic's `count_tokens` answers exactly this, and a response reports it as `input_tokens +
/// cache_read_input_tokens + cache_creation_input_tokens` (Anthropic) or `prompt_tokens` (OpenAI).
pub fn count_input_tokens(body: &Value) -> u64 {
    let system = body.get("system").map(content_tokens).unwrap_or(0);
    let messages: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| msgs.iter().map(|m| TOKENS_PER_MESSAGE + m.get("content").map(content_tokens).unwrap_or(0)).sum())
        .unwrap_or(0);
    let tools = body.get("tools").map(|t| ceil_quarter(t.to_string().chars().count())).unwrap_or(0);
    let cached = Directives::parse(&last_user_text(body)).map(|d| d.cache_read + d.cache_write).unwrap_or(0);
    system + messages + tools + cached
}

const WORDS: [&str; 32] = [
    "alpha", "bright", "cedar", "delta", "ember", "fjord", "granite", "harbor", "island", "juniper", "kestrel",
    "lantern", "meadow", "nimbus", "orchard", "pebble", "quartz", "river", "saffron", "timber", "umber", "valley",
    "willow", "xenon", "yarrow", "zephyr", "amber", "birch", "cobalt", "dune", "echo", "fern",
];

/// FNV-1a: stable across runs and platforms, unlike std's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The reply as `n` pieces, one per output token: words cycling through a fixed list from a start chosen by the
/// hash of `seed_text`; every piece but the first starts with a space.
pub(crate) fn reply_pieces(seed_text: &str, n: u64) -> Vec<String> {
    let start = fnv1a(seed_text) as usize;
    (0..n as usize)
        .map(|i| {
            let word = WORDS[(start.wrapping_add(i.wrapping_mul(7))) % WORDS.len()];
            if i == 0 { word.to_string() } else { format!(" {word}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn directives_are_read_from_anywhere_in_the_text() {
        let d =
            Directives::parse("hi [sandbox:tokens=300] and [sandbox:cache_read=100, cache_write=7]").expect("parses");
        assert_eq!(d, Directives { tokens: Some(300), cache_read: 100, cache_write: 7 });
        assert!(Directives::parse("[sandbox:colour=3]").is_err());
        assert!(Directives::parse("[sandbox:tokens=x]").is_err());
    }

    #[test]
    fn input_tokens_count_system_messages_and_cached_prefix() {
        let body = json!({"system": "12345678", "messages": [
            {"role": "user", "content": "abcd"},
            {"role": "assistant", "content": [{"type": "text", "text": "abcde"}]},
            {"role": "user", "content": "[sandbox:cache_read=10]"},
        ]});
        // system 2, messages 4+1, 4+2, 4+6 (23 chars), cached 10
        assert_eq!(count_input_tokens(&body), 2 + 5 + 6 + 10 + 10);
    }

    #[test]
    fn the_reply_is_the_same_for_the_same_question() {
        assert_eq!(reply_pieces("q", 5), reply_pieces("q", 5));
        assert_eq!(reply_pieces("q", 5).len(), 5);
        assert!(reply_pieces("q", 2)[1].starts_with(' '));
    }
}
