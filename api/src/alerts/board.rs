//! [`AlertBoard`]: the `alerts` table as the runner last read it, shared with
//! the routes that show it (`GET /v1/alerts`).

use std::sync::{Arc, RwLock};

use allot_query::alerts::AlertLog;

/// What the runner last read of the `alerts` table.
#[derive(Default)]
pub struct AlertBoard(RwLock<Arc<AlertLog>>);

impl AlertBoard {
    /// The log as last read.
    pub fn log(&self) -> Arc<AlertLog> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces what the board shows.
    pub fn set(&self, log: Arc<AlertLog>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = log;
    }
}
