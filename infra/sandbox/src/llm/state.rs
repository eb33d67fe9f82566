//! What an LLM sandbox remembers: the fault switches and the accounting of every response, kept to the usage the
//! server actually sent (`/sandbox/state`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::faults::Faults;

/// Usage as a client has seen it so far, in the API's own terms: for OpenAI `input_tokens` is `prompt_tokens`
/// (cached tokens included), for Anthropic `input_tokens` (cached tokens excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
}

/// One successful (status 200) generation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResponseRecord {
    pub id: String,
    pub model: String,
    pub stream: bool,
    pub api_key_suffix: String,
    #[serde(flatten)]
    pub usage: Usage,
    /// Text pieces (one per output token) written to the client.
    pub text_tokens_sent: u64,
    /// The whole response was written (non-stream body, or the stream's final event).
    pub complete: bool,
    /// The connection was aborted mid-stream by a `drop` fault.
    pub dropped: bool,
    /// The stream ended with an `error` event (`stream_error` fault).
    pub stream_error: bool,
}

impl ResponseRecord {
    /// A generation about to be sent: nothing written yet.
    pub fn new(id: &str, model: &str, stream: bool, api_key_suffix: String) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            stream,
            api_key_suffix,
            usage: Usage::default(),
            text_tokens_sent: 0,
            complete: false,
            dropped: false,
            stream_error: false,
        }
    }
}

/// Where a stream writes its progress: the record's index, valid while `epoch` matches (a reset bumps it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef {
    epoch: u64,
    index: usize,
}

#[derive(Debug, Default)]
pub(crate) struct LlmState {
    pub faults: Faults,
    epoch: u64,
    requests: u64,
    count_tokens_requests: u64,
    by_status: BTreeMap<u16, u64>,
    hung: u64,
    responses: Vec<ResponseRecord>,
}

impl LlmState {
    pub fn count_request(&mut self) {
        self.requests += 1;
    }

    pub fn count_tokens_request(&mut self) {
        self.count_tokens_requests += 1;
    }

    pub fn count_status(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
    }

    pub fn count_hang(&mut self) {
        self.hung += 1;
    }

    pub fn push(&mut self, record: ResponseRecord) -> RecordRef {
        self.responses.push(record);
        RecordRef { epoch: self.epoch, index: self.responses.len() - 1 }
    }

    /// The record a running stream updates; `None` once a reset has forgotten it.
    pub fn record(&mut self, at: RecordRef) -> Option<&mut ResponseRecord> {
        if at.epoch == self.epoch { self.responses.get_mut(at.index) } else { None }
    }

    /// `POST /sandbox/reset`: forgets the counters and responses; the fault switches stay.
    pub fn reset(&mut self) {
        let faults = std::mem::take(&mut self.faults);
        *self = LlmState { faults, epoch: self.epoch + 1, ..Default::default() };
    }

    pub fn to_json(&self, llm: &str) -> Value {
        let mut reported = Usage::default();
        for r in &self.responses {
            reported.input_tokens += r.usage.input_tokens;
            reported.output_tokens += r.usage.output_tokens;
            reported.cache_read_input_tokens += r.usage.cache_read_input_tokens;
            reported.cache_creation_input_tokens += r.usage.cache_creation_input_tokens;
        }
        let by_status: BTreeMap<String, u64> = self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        json!({
            "llm": llm,
            "requests": self.requests,
            "count_tokens_requests": self.count_tokens_requests,
            "by_status": by_status,
            "hung": self.hung,
            "dropped": self.responses.iter().filter(|r| r.dropped).count(),
            "reported": reported,
            "responses": self.responses,
            "faults": self.faults,
        })
    }
}
