//! The time limit inside the engine.
//!
//! Aborting a query's task stops it only at its next await point, and an
//! operator pulling ready batches from another (a nested-loop join feeding a
//! count) may never reach one. So every operator of the physical plan is
//! wrapped in a [`Deadline`] that checks the time on each batch it passes up
//! and ends the stream with an error once the query's time is up: the work
//! stops within one batch, on whatever thread runs it.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// The message of the error a [`Deadline`] ends a stream with.
pub(super) const PAST_DEADLINE: &str = "the query ran past its time limit";

/// Wraps every operator of `plan` in a [`Deadline`] at `at`.
pub(super) fn with_deadline(
    plan: Arc<dyn ExecutionPlan>,
    at: Instant,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(Transformed::yes(
            Arc::new(Deadline { input: node, at }) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|transformed| transformed.data)
}

/// Passes its input's batches through until `at`, then fails.
#[derive(Debug)]
struct Deadline {
    input: Arc<dyn ExecutionPlan>,
    at: Instant,
}

impl DisplayAs for Deadline {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deadline")
    }
}

impl ExecutionPlan for Deadline {
    fn name(&self) -> &str {
        "Deadline"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Deadline { input, at: self.at })),
            _ => Err(DataFusionError::Internal(
                "a deadline wraps exactly one operator".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let at = self.at;
        let checked = input.map(move |batch| {
            if Instant::now() >= at {
                Err(DataFusionError::Execution(PAST_DEADLINE.to_string()))
            } else {
                batch
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, checked)))
    }
}
