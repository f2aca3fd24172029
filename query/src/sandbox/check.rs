//! The statement check: what a SQL text may be before anything plans it.
//!
//! In order, each step bounding what the next one may cost:
//! 1. the text is at most [`MAX_SQL_BYTES`] long;
//! 2. the parser nests at most [`MAX_PARSER_NESTING`] deep (parentheses,
//!    subqueries, function arguments, `CASE` in `CASE`), so parsing itself never
//!    recurses without bound;
//! 3. exactly one statement, a query (`SELECT`, `WITH … SELECT`, `VALUES`) or an
//!    `EXPLAIN` of one;
//! 4. one walk over the parsed query that stops at the first problem: a
//!    relation it may not read, an expression nested deeper than
//!    [`MAX_EXPRESSION_DEPTH`] (`1+1+…+1` parses without recursion into a tree
//!    as deep as it is long), or a chain of more than [`MAX_SET_OPERATIONS`]
//!    `UNION`/`INTERSECT`/`EXCEPT`. The walk never goes deeper than those limits.
//!
//! After planning, [`check_plan_size`] bounds the plan the engine will optimise
//! (common table expressions are inlined at every use, so a short text can
//! name an exponential plan).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use allot_lake::session::{SQL_CATALOG, SQL_SCHEMA, Scope};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::{Catalogs, pg_catalog, strip_prefixes, visible_tables};
use crate::error::QueryError;

/// The longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 << 10;
/// How deep the parser may nest (parentheses, subqueries, function calls).
pub const MAX_PARSER_NESTING: usize = 50;
/// How deep a parsed expression may be (`a + b + …` is as deep as it is long).
pub const MAX_EXPRESSION_DEPTH: usize = 256;
/// How many `UNION`/`INTERSECT`/`EXCEPT` one query may chain.
pub const MAX_SET_OPERATIONS: usize = 256;
/// How many nodes the logical plan may have, every inlined CTE counted at each use.
pub const MAX_PLAN_NODES: usize = 2_000;
/// How many expression nodes the logical plan may hold in all.
pub const MAX_PLAN_EXPRESSIONS: usize = 200_000;

pub(super) fn rejected(message: impl Into<String>) -> QueryError {
    QueryError::SqlRejected(message.into())
}

pub(super) fn only_queries() -> QueryError {
    rejected("only a single SELECT (or WITH … SELECT, EXPLAIN) may run")
}

/// Checks `sql` against the statement rules and returns the parsed statement.
pub fn check_sql(sql: &str, scope: &Scope) -> Result<DfStatement, QueryError> {
    check_request(sql, scope, Catalogs::None)
}

/// Checks `sql` against the statement rules, letting it read `catalogs` too,
/// and returns the parsed statement (with PostgreSQL's spellings rewritten
/// to the engine's when it may read PostgreSQL's catalogs).
pub fn check_request(
    sql: &str,
    scope: &Scope,
    catalogs: Catalogs,
) -> Result<DfStatement, QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(rejected(format!(
            "the statement is {} KiB long; at most {} KiB is accepted",
            sql.len().div_ceil(1024),
            MAX_SQL_BYTES >> 10
        )));
    }
    let syntax = |e: datafusion::error::DataFusionError| {
        let message = strip_prefixes(&e.to_string());
        if message.contains("recursion limit exceeded") {
            rejected(format!(
                "the statement nests too deeply: at most {MAX_PARSER_NESTING} levels of parentheses, subqueries or function calls"
            ))
        } else {
            rejected(format!("SQL syntax error: {message}"))
        }
    };
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .with_recursion_limit(MAX_PARSER_NESTING)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(syntax)?;
    if statements.len() != 1 {
        return Err(rejected(format!(
            "exactly one statement is allowed, got {}",
            statements.len()
        )));
    }
    let mut statement = statements.pop_front().expect("one statement");
    if catalogs == Catalogs::Postgres {
        // The rewrite walks the statement, so its size is bounded first; the
        // rules are checked on what the rewrite leaves, since it drops the
        // parts of a read of an always-empty catalog that never run.
        walk(query_in(&statement)?, scope, catalogs, Rules::BoundsOnly)?;
        if let DfStatement::Statement(inner) = &mut statement {
            pg_catalog::rewrite(inner);
        }
    }
    walk(query_in(&statement)?, scope, catalogs, Rules::All)?;
    Ok(statement)
}

/// Which rules a walk of a statement checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// Only the bounds on the statement's size: depth and set operations.
    BoundsOnly,
    /// Every rule.
    All,
}

/// Walks `query` with the [`StatementCheck`] of `rules`.
fn walk(query: &Query, scope: &Scope, catalogs: Catalogs, rules: Rules) -> Result<(), QueryError> {
    let mut checker = StatementCheck {
        catalogs,
        rules,
        visible: visible_tables(scope),
        ctes: BTreeSet::new(),
        depth: 0,
    };
    match query.visit(&mut checker) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The query `statement` runs, or why it is not one.
fn query_in(statement: &DfStatement) -> Result<&Query, QueryError> {
    match statement {
        DfStatement::Statement(inner) => query_of(inner),
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(inner) => query_of(inner),
            _ => Err(only_queries()),
        },
        DfStatement::CreateExternalTable(_) => Err(rejected(
            "CREATE EXTERNAL TABLE is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run",
        )),
        DfStatement::CopyTo(_) => Err(rejected(
            "COPY is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run",
        )),
        DfStatement::Reset(_) => Err(only_queries()),
    }
}

fn query_of(statement: &Statement) -> Result<&Query, QueryError> {
    match statement {
        Statement::Query(query) => Ok(query),
        Statement::Explain { statement, .. } => query_of(statement),
        other => {
            let keyword = other
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_uppercase();
            Err(rejected(format!(
                "{keyword} is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run"
            )))
        }
    }
}

/// Refuses a plan larger than [`MAX_PLAN_NODES`] nodes or
/// [`MAX_PLAN_EXPRESSIONS`] expression nodes, counting no further than that.
pub fn check_plan_size(plan: &LogicalPlan) -> Result<(), QueryError> {
    let mut nodes = 0usize;
    let mut expressions = 0usize;
    let mut too_large = false;
    let walk = plan.apply_with_subqueries(|node| {
        nodes += 1;
        if nodes > MAX_PLAN_NODES {
            too_large = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expr| {
            expr.apply(|_| {
                expressions += 1;
                if expressions > MAX_PLAN_EXPRESSIONS {
                    too_large = true;
                    Ok(TreeNodeRecursion::Stop)
                } else {
                    Ok(TreeNodeRecursion::Continue)
                }
            })
        })
    });
    if walk.is_err() || too_large {
        return Err(rejected(format!(
            "the query plan is too large (at most {MAX_PLAN_NODES} operators and {MAX_PLAN_EXPRESSIONS} expression nodes, each common table expression counted at every use)"
        )));
    }
    Ok(())
}

/// Walks a query and breaks on the first relation it may not read or the
/// first shape over the limits.
struct StatementCheck {
    catalogs: Catalogs,
    rules: Rules,
    visible: Vec<&'static str>,
    ctes: BTreeSet<String>,
    /// Expressions entered and not yet left.
    depth: usize,
}

/// How many set operations `body` chains, counting no further than the limit.
fn set_operations(body: &SetExpr) -> usize {
    let mut pending = vec![body];
    let mut count = 0;
    while let Some(expr) = pending.pop() {
        if let SetExpr::SetOperation { left, right, .. } = expr {
            count += 1;
            if count > MAX_SET_OPERATIONS {
                break;
            }
            pending.push(left);
            pending.push(right);
        }
    }
    count
}

impl Visitor for StatementCheck {
    type Break = QueryError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<QueryError> {
        if set_operations(&query.body) > MAX_SET_OPERATIONS {
            return ControlFlow::Break(rejected(format!(
                "the query chains more than {MAX_SET_OPERATIONS} UNION, INTERSECT or EXCEPT"
            )));
        }
        if self.rules == Rules::BoundsOnly {
            return ControlFlow::Continue(());
        }
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) =
            query.body.as_ref()
        {
            return ControlFlow::Break(only_queries());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QueryError> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return ControlFlow::Break(rejected(format!(
                "an expression nests more than {MAX_EXPRESSION_DEPTH} levels deep (a chain such as a + b + … counts one level per operator)"
            )));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<QueryError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
        if self.rules == Rules::BoundsOnly {
            return ControlFlow::Continue(());
        }
        match factor {
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::OpenJsonTable { .. }
            | TableFactor::XmlTable { .. } => ControlFlow::Break(rejected(format!(
                "table functions are not allowed; queries may read: {}",
                self.visible.join(", ")
            ))),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<QueryError> {
        if self.rules == Rules::BoundsOnly {
            return ControlFlow::Continue(());
        }
        let parts: Vec<String> = relation
            .0
            .iter()
            .map(|part| {
                part.as_ident()
                    .map(|ident| ident.value.to_lowercase())
                    .unwrap_or_default()
            })
            .collect();
        if self.catalogs == Catalogs::Postgres && pg_catalog::is_catalog_table(&parts) {
            return ControlFlow::Continue(());
        }
        if parts.iter().any(|p| p == "information_schema") {
            return ControlFlow::Break(rejected("information_schema is not available"));
        }
        // A table may be qualified by its schema, or catalog and schema, as
        // tools that list them (Flight SQL's GetTables) name it.
        let allowed = match parts.as_slice() {
            [name] => self.visible.contains(&name.as_str()) || self.ctes.contains(name),
            [schema, name] if schema == SQL_SCHEMA => self.visible.contains(&name.as_str()),
            [catalog, schema, name] if catalog == SQL_CATALOG && schema == SQL_SCHEMA => {
                self.visible.contains(&name.as_str())
            }
            _ => false,
        };
        if allowed {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(rejected(format!(
                "unknown table; queries may read: {}",
                self.visible.join(", ")
            )))
        }
    }
}
