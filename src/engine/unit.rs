//! What runs a batch: the model's `before` steps, then its graph or graphs
//! (`graphs::Layout`). A unit is held by one thread at a time (a worker, or an HTTP thread on
//! the inline path), so a batch goes through the steps and every graph as one piece of work.

use std::sync::Arc;

use ort::session::Session;

use super::graphs::Layout;
use crate::codec::Frame;
use crate::model::Outputs;
use crate::pipeline::before::Scratch;
use crate::pipeline::Before;

pub struct Unit {
    /// One per graph file, as listed.
    sessions: Vec<Session>,
    layout: Arc<Layout>,
    before: Option<(Arc<Before>, Scratch)>,
}

impl Unit {
    pub fn new(sessions: Vec<Session>, layout: Arc<Layout>, before: Option<Arc<Before>>) -> Self {
        Self {
            sessions,
            layout,
            before: before.map(|b| {
                let scratch = b.scratch();
                (b, scratch)
            }),
        }
    }

    /// Whether its steps call a WebAssembly function.
    pub fn has_functions(&self) -> bool {
        self.before.as_ref().is_some_and(|(b, _)| b.has_functions())
    }

    /// A request's frame (as the request signature has it) through the steps and the graphs.
    pub fn run(&mut self, frame: Frame) -> Result<Outputs, String> {
        self.run_unless(frame, &|| false)
    }

    /// As `run`, stopping between runs of a fixed-batch graph once `abandoned` says so
    /// (`session::run_unless`).
    pub fn run_unless(
        &mut self,
        frame: Frame,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Outputs, String> {
        let frame = match &mut self.before {
            Some((b, scratch)) => b.apply(frame, scratch)?,
            None => frame,
        };
        self.layout.run(&mut self.sessions, frame, abandoned)
    }
}
