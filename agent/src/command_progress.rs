//! How long-running work (an image write, a clean step) publishes interim
//! results while it runs. The domain code reports to a [`CommandProgress`]; what
//! shows the report (IPA's `GET /v1/commands/<id>` while the command is
//! RUNNING) is the API layer's business, behind [`ProgressSink`].

use std::sync::{Arc, Weak};

use serde_json::Value;

/// Where reports go: the API layer's command record.
pub trait ProgressSink: Send + Sync {
    fn report(&self, value: Value);
}

/// A handle on a running command's interim result. It holds its sink
/// weakly, so a finished command's record is not kept alive by work that
/// still holds the handle; the default handle reports nowhere.
#[derive(Clone, Default)]
pub struct CommandProgress {
    sink: Option<Weak<dyn ProgressSink>>,
}

impl CommandProgress {
    pub fn to<S: ProgressSink + 'static>(sink: &Arc<S>) -> Self {
        let sink: Arc<dyn ProgressSink> = sink.clone();
        Self {
            sink: Some(Arc::downgrade(&sink)),
        }
    }

    pub fn report(&self, value: Value) {
        if let Some(sink) = self.sink.as_ref().and_then(Weak::upgrade) {
            sink.report(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Last(Mutex<Option<Value>>);

    impl ProgressSink for Last {
        fn report(&self, value: Value) {
            *self.0.lock().unwrap() = Some(value);
        }
    }

    #[test]
    fn reports_reach_a_live_sink_and_nothing_else() {
        let sink = Arc::new(Last(Mutex::new(None)));
        let p = CommandProgress::to(&sink);
        p.report(serde_json::json!({"bytes": 1}));
        assert_eq!(
            *sink.0.lock().unwrap(),
            Some(serde_json::json!({"bytes": 1}))
        );
        drop(sink);
        p.report(serde_json::json!({"bytes": 2}));
        CommandProgress::default().report(serde_json::json!({"bytes": 3}));
    }
}
