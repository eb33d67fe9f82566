//! A server-sent-events body that records each event's usage as it is handed to the connection, and can be cut
//! short: aborted mid-body (the connection closes without the final chunk) or ended by an `error` event.

use std::time::Duration;

use axum::body::{Body, Bytes};

use super::App;
use super::faults::Cut;
use super::state::{RecordRef, Usage};

/// One SSE event of a planned stream.
pub(crate) struct SseEvent {
    pub bytes: Bytes,
    /// The usage a client knows once it has read this event (Anthropic's `message_start` and `message_delta`,
    /// OpenAI's usage chunk).
    pub usage: Option<Usage>,
    /// Carries one text piece (one output token).
    pub text: bool,
    /// The stream's last event (`message_stop`, `[DONE]`).
    pub last: bool,
}

impl SseEvent {
    pub fn new(bytes: String) -> Self {
        SseEvent { bytes: Bytes::from(bytes), usage: None, text: false, last: false }
    }
}

/// How long a cut stream waits before aborting, so the events before the cut are flushed to the socket first.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(30);

enum Step {
    Send(SseEvent),
    Abort,
    Error(Bytes),
}

/// The stream's body. `cut` applies to `events` (whose length is known here): a drop is clamped so the last event
/// is never sent; `error_event` is what an `ErrorAfter` cut sends.
pub(crate) fn body(
    app: App,
    at: RecordRef,
    events: Vec<SseEvent>,
    cut: Option<Cut>,
    error_event: Bytes,
    slow_ms: u64,
) -> Body {
    let len = events.len() as u64;
    let last_index = len.saturating_sub(1);
    let mut steps: Vec<Step> = Vec::with_capacity(events.len() + 1);
    let cut_at = match cut {
        Some(Cut::DropAfter(k)) => Some((k.min(last_index), true)),
        Some(Cut::DropAt(fraction)) => {
            // 1..=len-1 events go out: at least the first, never the last.
            let k = 1 + (fraction * last_index.saturating_sub(1) as f64) as u64;
            Some((k.min(last_index), true))
        }
        Some(Cut::ErrorAfter(k)) => Some((k.min(last_index), false)),
        None => None,
    };
    for (i, event) in events.into_iter().enumerate() {
        if let Some((k, abort)) = cut_at
            && i as u64 == k
        {
            steps.push(if abort { Step::Abort } else { Step::Error(error_event) });
            break;
        }
        steps.push(Step::Send(event));
    }
    let stream = futures::stream::unfold((steps.into_iter(), 0usize), move |(mut steps, n)| {
        let app = app.clone();
        async move {
            let step = steps.next()?;
            if n > 0 && slow_ms > 0 {
                tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            }
            let item = match step {
                Step::Send(event) => {
                    app.with(|s| {
                        if let Some(r) = s.record(at) {
                            if let Some(usage) = event.usage {
                                r.usage = usage;
                            }
                            r.text_tokens_sent += u64::from(event.text);
                            r.complete |= event.last;
                        }
                    });
                    Ok(event.bytes)
                }
                Step::Error(bytes) => {
                    app.with(|s| {
                        if let Some(r) = s.record(at) {
                            r.stream_error = true;
                        }
                    });
                    Ok(bytes)
                }
                Step::Abort => {
                    tokio::time::sleep(FLUSH_BEFORE_ABORT).await;
                    app.with(|s| {
                        if let Some(r) = s.record(at) {
                            r.dropped = true;
                        }
                    });
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "sandbox fault: stream dropped"))
                }
            };
            Some((item, (steps, n + 1)))
        }
    });
    Body::from_stream(stream)
}
