//! Accounting for answers passed through from an upstream that speaks the client's API itself
//! (native Responses, Anthropic Messages): the usage is read from the upstream's own objects and
//! events and recorded as chat's is (token metrics, the deployment's `tpm`, the access line),
//! and a stream's end is counted like any other stream's.

use crate::Observation;
use crate::gateway::GatewayState;
use crate::outcome::{StreamOutcome, UsageSource};
use scira2api_models::Deployment;
use scira2api_types::Usage;
use serde_json::Value;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Usage from an upstream usage object: Responses' `input_tokens`/`output_tokens`, or
/// Messages' with its cache reads and writes counted as prompt tokens. `None` when it has none.
pub(crate) fn usage_of(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let output = n("output_tokens")?;
    let input = n("input_tokens").unwrap_or(0)
        + n("cache_read_input_tokens").unwrap_or(0)
        + n("cache_creation_input_tokens").unwrap_or(0);
    Some(Usage::new(input, output))
}

/// The parsed `data` of an `event: <kind>\ndata: <json>\n\n` frame.
pub(crate) fn event_data(frame: &[u8]) -> Option<Value> {
    let data = frame
        .splitn(2, |&b| b == b'\n')
        .nth(1)?
        .strip_prefix(b"data: ")?;
    serde_json::from_slice(data.trim_ascii()).ok()
}

/// Records a whole native answer's usage for `model` (its deployment charged for `tpm`).
pub(crate) fn record(
    state: &GatewayState,
    model: &str,
    deployment: Option<&Arc<Deployment>>,
    usage: &Usage,
) {
    state.record_usage(model, usage, UsageSource::Upstream);
    if let Some(d) = deployment {
        d.record_tokens(usage.total_tokens, Instant::now());
    }
}

/// One native stream's accounting: counted active from its start, its usage gathered from the
/// events as they pass, recorded once when it ends (completed, failed, or dropped because the
/// client went away).
pub(crate) struct NativeStreamTally {
    state: Arc<GatewayState>,
    model: String,
    deployment: Option<Arc<Deployment>>,
    observation: Option<Rc<Observation>>,
    /// The prompt tokens and the output tokens so far.
    input: Option<u64>,
    output: Option<u64>,
    finished: bool,
}

impl NativeStreamTally {
    pub(crate) fn new(
        state: Arc<GatewayState>,
        model: &str,
        deployment: Option<Arc<Deployment>>,
        observation: Option<Rc<Observation>>,
    ) -> Self {
        state.metrics().streams_active.inc();
        NativeStreamTally {
            state,
            model: model.to_owned(),
            deployment,
            observation,
            input: None,
            output: None,
            finished: false,
        }
    }

    /// Takes the counts of an upstream usage object (later ones replace earlier ones; a
    /// Messages stream reports its input at the start and its output at the end).
    pub(crate) fn saw(&mut self, u: &Value) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(i) = n("input_tokens") {
            self.input = Some(
                i + n("cache_read_input_tokens").unwrap_or(0)
                    + n("cache_creation_input_tokens").unwrap_or(0),
            );
        }
        if let Some(o) = n("output_tokens") {
            self.output = Some(o);
        }
    }

    /// The stream ended this way; its usage is recorded (once).
    pub(crate) fn finish(&mut self, outcome: StreamOutcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let m = self.state.metrics();
        m.streams_active.dec();
        match &outcome {
            StreamOutcome::Completed => m.streams_completed.inc(),
            StreamOutcome::Failed(code) => m.streams_cut.with_label_values(&[code]).inc(),
            StreamOutcome::ClientGone => m.streams_cut.with_label_values(&["client_gone"]).inc(),
        }
        let usage = self.output.map(|o| Usage::new(self.input.unwrap_or(0), o));
        if let Some(u) = &usage {
            record(&self.state, &self.model, self.deployment.as_ref(), u);
        }
        if let Some(o) = self.observation.take() {
            o.stream_ended(outcome, usage.map(|u| (u, UsageSource::Upstream)));
        }
    }
}

impl Drop for NativeStreamTally {
    fn drop(&mut self) {
        self.finish(StreamOutcome::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_apis_usage() {
        assert_eq!(
            usage_of(&json!({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})),
            Some(Usage::new(3, 4))
        );
        assert_eq!(
            usage_of(
                &json!({"input_tokens": 3, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 2, "output_tokens": 4})
            ),
            Some(Usage::new(15, 4))
        );
        assert_eq!(usage_of(&json!({"input_tokens": 3})), None);
    }
}
