//! The listeners of `allot serve` besides HTTP (Flight SQL, the PostgreSQL
//! wire), as `/readyz` reports them: a server whose listener stopped is not
//! ready, so an orchestrator replaces it instead of sending it clients that
//! would find nothing there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// What one listener is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerState {
    /// Accepting connections on this address.
    Serving(SocketAddr),
    /// Stopped by an error, which it says.
    Failed(String),
}

/// Every listener's state, by name (`flight_sql`, `postgres`).
#[derive(Debug, Default)]
pub struct Listeners {
    states: Mutex<BTreeMap<&'static str, ListenerState>>,
}

impl Listeners {
    /// Records that `name` accepts connections on `address`.
    pub fn serving(&self, name: &'static str, address: SocketAddr) {
        self.set(name, ListenerState::Serving(address));
    }

    /// Records that `name` stopped with `error`.
    pub fn failed(&self, name: &'static str, error: impl std::fmt::Display) {
        tracing::error!(listener = name, %error, "a listener stopped");
        self.set(name, ListenerState::Failed(error.to_string()));
    }

    /// Every listener's state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, ListenerState> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, name: &'static str, state: ListenerState) {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_replaces_the_address() {
        let listeners = Listeners::default();
        let address: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        listeners.serving("flight_sql", address);
        assert_eq!(
            listeners.states()["flight_sql"],
            ListenerState::Serving(address)
        );
        listeners.failed("flight_sql", "address in use");
        assert_eq!(
            listeners.states()["flight_sql"],
            ListenerState::Failed("address in use".to_string())
        );
    }
}
