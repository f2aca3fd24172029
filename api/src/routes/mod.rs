//! The routes of docs/reference.md#http-api in groups, each a function
//! returning [`Routes`]: [`tenant`] (one tenant's views), [`finance`]
//! (all-tenant views), [`alerts`] (alerts and their deliveries), [`closing`] (period close: closings, certificates,
//! margin), [`preview`] (what-if pricing), [`sql`], [`ops`] (health, readiness, metrics, OpenAPI) and [`web`]
//! (dashboards).
//!
//! [`Routes`] records every method and path it registers, so the route table
//! that the OpenAPI test compares is the router's own, not a copy.

pub mod alerts;
pub mod closing;
pub mod finance;
pub mod ops;
pub mod preview;
pub mod sql;
pub mod tenant;
pub mod web;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{get, post};

use crate::state::AppState;

/// A registered route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteSpec {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path template, e.g. `/v1/tenants/{id}/health`.
    pub path: &'static str,
}

/// A router under construction and the routes it has.
pub struct Routes {
    /// The router.
    pub router: Router<AppState>,
    /// Its routes.
    pub specs: Vec<RouteSpec>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    fn get<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.specs.push(RouteSpec {
            method: "GET",
            path,
        });
        self.router = self.router.route(path, get(handler));
        self
    }

    fn post<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.specs.push(RouteSpec {
            method: "POST",
            path,
        });
        self.router = self.router.route(path, post(handler));
        self
    }

    /// Both groups' routes.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.specs.extend(other.specs);
        self
    }
}

/// The routes that need a bearer token: everything under `/v1` but the
/// OpenAPI document.
pub fn authenticated() -> Routes {
    tenant::routes()
        .merge(finance::routes())
        .merge(closing::routes())
        .merge(preview::routes())
        .merge(sql::routes())
        .merge(alerts::routes())
}

/// The routes open to anyone.
pub fn public() -> Routes {
    ops::routes()
}
