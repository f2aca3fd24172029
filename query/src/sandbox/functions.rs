//! Function outputs bounded by the query's memory.
//!
//! DataFusion's memory pool counts what operators hold (sorts, joins,
//! aggregates), not what a scalar function builds: `repeat('x', 1500000000)`,
//! `range(0, 300000000)` or twenty common table expressions each doubling
//! `s || s` allocate gigabytes under a 512 MiB cap, and constant folding does it
//! while planning, before any time limit can stop it.
//!
//! So every function whose output can outgrow its inputs (the table in
//! [`OutputSize::of`]), and the `||` operator, are replaced in the analysed plan
//! by a [`Bounded`] call. Before each call it computes an upper bound of what the
//! call will build from the argument values (lengths and counts, never the
//! output itself) and reserves it in the query's memory pool: a call that would
//! build more than the pool has left fails with the memory-limit error instead of
//! allocating. A constant the planner folds keeps its reservation until the
//! query ends, since the plan holds it; a batch's reservation ends with the call.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::cast::cast;
use arrow::compute::kernels::concat_elements::concat_elements_dyn;
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, ExprSchemable, ExpressionPlacement,
    LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, StructFieldMapping, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

/// Installs the bounds in `ctx`, against its memory pool.
pub(super) fn install(ctx: &SessionContext) {
    let budget = Arc::new(Budget {
        pool: Arc::clone(&ctx.runtime_env().memory_pool),
        constants: Mutex::new(Vec::new()),
    });
    ctx.add_analyzer_rule(Arc::new(BoundOutputs { budget }));
}

/// The query's memory pool, and the reservations of the constants it folded.
struct Budget {
    pool: Arc<dyn MemoryPool>,
    constants: Mutex<Vec<MemoryReservation>>,
}

impl Budget {
    /// Reserves `bytes` for what `function` is about to build.
    fn admit(&self, function: &str, bytes: u64) -> Result<MemoryReservation> {
        let reservation = MemoryConsumer::new(format!("{function} output")).register(&self.pool);
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        reservation.try_grow(bytes).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "{function} would build about {} MiB",
                bytes >> 20
            ))
        })?;
        Ok(reservation)
    }

    /// Keeps `bytes` of `reservation` until the query ends.
    fn keep(&self, reservation: MemoryReservation, bytes: usize) {
        reservation.resize(bytes.min(reservation.size()));
        if let Ok(mut constants) = self.constants.lock() {
            constants.push(reservation);
        }
    }
}

/// The analyser rule that puts every growing call behind a [`Bounded`].
struct BoundOutputs {
    budget: Arc<Budget>,
}

impl fmt::Debug for BoundOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoundOutputs")
    }
}

impl AnalyzerRule for BoundOutputs {
    fn name(&self) -> &str {
        "allot_bound_function_outputs"
    }

    fn analyze(&self, plan: LogicalPlan, _options: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let schema = merge_schema(&plan.inputs());
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                let bounded = expr.transform_up(|expr| bound(expr, &self.budget, Some(&schema)))?;
                Ok(bounded.update_data(|expr| name.restore(expr)))
            })
        })
        .map(|transformed| transformed.data)
    }
}

/// Puts `expr` behind a [`Bounded`] call when it is a growing function or a
/// string `||` (whose operand types `schema` tells).
fn bound(
    expr: Expr,
    budget: &Arc<Budget>,
    schema: Option<&datafusion::common::DFSchema>,
) -> Result<Transformed<Expr>> {
    match expr {
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.inner().downcast_ref::<Bounded>().is_none() =>
        {
            match OutputSize::of(func.name()) {
                Some(size) => Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                    func: Arc::new(ScalarUDF::new_from_impl(Bounded {
                        inner: ScalarUDF::clone(&func),
                        size,
                        budget: Arc::clone(budget),
                    })),
                    args,
                }))),
                None => Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                    func,
                    args,
                }))),
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) if schema.is_some_and(|schema| concatenable(&left, &right, schema)) => {
            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                func: Arc::new(ScalarUDF::new_from_impl(Bounded {
                    inner: ScalarUDF::new_from_impl(ConcatOperator::new()),
                    size: OutputSize::Sum(1),
                    budget: Arc::clone(budget),
                })),
                args: vec![*left, *right],
            })))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Whether `left || right` is a concatenation of two values of one string or
/// binary type (what the engine's `||` kernel takes).
fn concatenable(left: &Expr, right: &Expr, schema: &datafusion::common::DFSchema) -> bool {
    match (left.get_type(schema), right.get_type(schema)) {
        (Ok(l), Ok(r)) => {
            l == r
                && matches!(
                    l,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Binary
                        | DataType::LargeBinary
                        | DataType::BinaryView
                )
        }
        _ => false,
    }
}

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OutputSize {
    /// `repeat(text, n)`: the text `n` times.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: `n` characters of up to 4 bytes.
    Pad,
    /// `range`/`generate_series(start, stop [, step])`: one 8-byte value per step.
    Series,
    /// `array_repeat(element, n)`: the element `n` times.
    ArrayRepeat,
    /// `array_resize(array, n [, value])`: `n` elements.
    ArrayResize,
    /// `replace(text, from, to)`: at most `to` between every two characters.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: at most the
    /// replacement (and a copy of the text for its group references) per character.
    RegexpReplace,
    /// `concat_ws(separator, …)`: the arguments and a separator between each two.
    ConcatWs,
    /// `array_to_string(array, delimiter [, null])`: the elements and a
    /// delimiter (or null text) per element.
    Join,
    /// `array_replace…(array, from, to [, n])`: `to` for every element.
    ReplaceElements,
    /// Output at most this many times all the arguments together.
    Sum(u64),
}

impl OutputSize {
    /// The size rule of the function called `name`, if its output can outgrow
    /// its inputs (functions whose output is at most a small multiple of one
    /// argument, such as `upper`, cannot grow by nesting and are left alone).
    fn of(name: &str) -> Option<OutputSize> {
        Some(match name {
            "repeat" => OutputSize::Repeat,
            "lpad" | "rpad" => OutputSize::Pad,
            "range" | "generate_series" => OutputSize::Series,
            "array_repeat" => OutputSize::ArrayRepeat,
            "array_resize" => OutputSize::ArrayResize,
            "replace" => OutputSize::Replace,
            "regexp_replace" => OutputSize::RegexpReplace,
            "concat_ws" => OutputSize::ConcatWs,
            "array_to_string" => OutputSize::Join,
            "array_replace" | "array_replace_n" | "array_replace_all" => {
                OutputSize::ReplaceElements
            }
            "concat" | "overlay" | "array_concat" | "array_append" | "array_prepend"
            | "make_array" | "array_union" | "struct" | "named_struct" | "map" => {
                OutputSize::Sum(1)
            }
            "encode" => OutputSize::Sum(2),
            // One list element per character: its bytes and an offset.
            "string_to_array" => OutputSize::Sum(9),
            // A format specifier such as `%c` expands to about 24 bytes.
            "to_char" => OutputSize::Sum(16),
            _ => return None,
        })
    }

    /// An upper bound, in bytes, of what one call with `args` builds.
    fn estimate(self, args: &ScalarFunctionArgs) -> Result<u64> {
        let values = &args.args;
        let rows = if values.iter().all(|v| matches!(v, ColumnarValue::Scalar(_))) {
            1
        } else {
            args.number_rows
        };
        let arg = |i: usize| values.get(i);
        let per_row =
            |f: &dyn Fn(usize) -> u64| (0..rows).fold(0u64, |sum, row| sum.saturating_add(f(row)));
        Ok(match self {
            OutputSize::Repeat => {
                let (Some(text), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (text, n) = (lengths(text), counts(n, rows)?);
                per_row(&|row| text.at(row).saturating_mul(n.at(row)))
            }
            OutputSize::Pad => {
                let Some(n) = arg(1) else { return Ok(0) };
                let n = counts(n, rows)?;
                per_row(&|row| n.at(row).saturating_mul(4))
            }
            OutputSize::Series => series_bytes(values, rows)?,
            OutputSize::ArrayRepeat => {
                let (Some(element), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (element, n) = (lengths(element), counts(n, rows)?);
                per_row(&|row| element.at(row).max(8).saturating_mul(n.at(row)))
            }
            OutputSize::ArrayResize => {
                let (Some(array), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let element = match arg(2) {
                    Some(value) => lengths(value),
                    None => PerRow::Same(element_size(array)),
                };
                let n = counts(n, rows)?;
                total(array, rows).saturating_add(per_row(&|row| {
                    element.at(row).max(8).saturating_mul(n.at(row))
                }))
            }
            OutputSize::Replace => {
                let (Some(text), Some(to)) = (arg(0), arg(2)) else {
                    return Ok(0);
                };
                let (text, to) = (lengths(text), lengths(to));
                per_row(&|row| {
                    let text = text.at(row);
                    text.saturating_add((text + 1).saturating_mul(to.at(row)))
                })
            }
            OutputSize::RegexpReplace => {
                let (Some(text), Some(replacement)) = (arg(0), arg(2)) else {
                    return Ok(0);
                };
                let (text, replacement) = (lengths(text), lengths(replacement));
                per_row(&|row| {
                    (text.at(row) + 1)
                        .saturating_mul(replacement.at(row) + 1)
                        .saturating_mul(2)
                })
            }
            OutputSize::ConcatWs => {
                let Some(separator) = arg(0) else {
                    return Ok(0);
                };
                let parts = values.len().saturating_sub(1) as u64;
                let rest = values[1..]
                    .iter()
                    .fold(0u64, |sum, v| sum.saturating_add(total(v, rows)));
                total(separator, rows)
                    .saturating_mul(parts)
                    .saturating_add(rest)
            }
            OutputSize::Join => {
                let Some(array) = arg(0) else { return Ok(0) };
                let widest = values[1..].iter().map(|v| lengths(v).max()).sum::<u64>();
                total(array, rows).saturating_add(elements(array, rows).saturating_mul(widest))
            }
            OutputSize::ReplaceElements => {
                let (Some(array), Some(to)) = (arg(0), arg(2)) else {
                    return Ok(0);
                };
                let to = lengths(to).max().max(8);
                total(array, rows).saturating_add(elements(array, rows).saturating_mul(to))
            }
            OutputSize::Sum(factor) => values
                .iter()
                .fold(0u64, |sum, v| sum.saturating_add(total(v, rows)))
                .saturating_mul(factor),
        })
    }
}

/// A value per row: one for all, or each its own.
enum PerRow {
    Same(u64),
    Each(Vec<u64>),
}

impl PerRow {
    fn at(&self, row: usize) -> u64 {
        match self {
            PerRow::Same(value) => *value,
            PerRow::Each(values) => values.get(row).copied().unwrap_or(0),
        }
    }

    fn max(&self) -> u64 {
        match self {
            PerRow::Same(value) => *value,
            PerRow::Each(values) => values.iter().copied().max().unwrap_or(0),
        }
    }
}

/// The size in bytes of each row's value: text and binary exactly, a
/// fixed-width value its width, anything else its share of the array.
fn lengths(value: &ColumnarValue) -> PerRow {
    match value {
        ColumnarValue::Scalar(scalar) => PerRow::Same(scalar_bytes(scalar)),
        ColumnarValue::Array(array) => PerRow::Each(array_lengths(array)),
    }
}

fn scalar_bytes(scalar: &ScalarValue) -> u64 {
    let bytes = match scalar {
        ScalarValue::Utf8(text) | ScalarValue::LargeUtf8(text) | ScalarValue::Utf8View(text) => {
            text.as_ref().map_or(0, String::len)
        }
        ScalarValue::Binary(bytes)
        | ScalarValue::LargeBinary(bytes)
        | ScalarValue::BinaryView(bytes) => bytes.as_ref().map_or(0, Vec::len),
        other => other
            .data_type()
            .primitive_width()
            .unwrap_or_else(|| other.size()),
    };
    bytes as u64
}

fn array_lengths(array: &ArrayRef) -> Vec<u64> {
    fn collect<'a>(values: impl Iterator<Item = Option<usize>> + 'a) -> Vec<u64> {
        values.map(|len| len.unwrap_or(0) as u64).collect()
    }
    match array.data_type() {
        DataType::Utf8 => collect(array.as_string::<i32>().iter().map(|v| v.map(str::len))),
        DataType::LargeUtf8 => collect(array.as_string::<i64>().iter().map(|v| v.map(str::len))),
        DataType::Utf8View => collect(array.as_string_view().iter().map(|v| v.map(str::len))),
        DataType::Binary => collect(array.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::len))),
        DataType::LargeBinary => {
            collect(array.as_binary::<i64>().iter().map(|v| v.map(<[u8]>::len)))
        }
        DataType::BinaryView => collect(array.as_binary_view().iter().map(|v| v.map(<[u8]>::len))),
        other => {
            let each = other
                .primitive_width()
                .unwrap_or_else(|| array.get_array_memory_size() / array.len().max(1));
            vec![each as u64; array.len()]
        }
    }
}

/// The average size of an element of the list `value`.
fn element_size(value: &ColumnarValue) -> u64 {
    let children = match value {
        ColumnarValue::Scalar(scalar) => scalar.to_array().ok().map(|a| list_values(&a)),
        ColumnarValue::Array(array) => Some(list_values(array)),
    };
    match children.flatten() {
        Some(values) => (values.get_array_memory_size() / values.len().max(1)) as u64,
        None => 8,
    }
}

fn list_values(array: &ArrayRef) -> Option<ArrayRef> {
    match array.data_type() {
        DataType::List(_) => Some(Arc::clone(array.as_list::<i32>().values())),
        DataType::LargeList(_) => Some(Arc::clone(array.as_list::<i64>().values())),
        DataType::FixedSizeList(..) => Some(Arc::clone(array.as_fixed_size_list().values())),
        _ => None,
    }
}

/// How many elements the lists of `value` hold in all, over `rows` rows.
fn elements(value: &ColumnarValue, rows: usize) -> u64 {
    match value {
        ColumnarValue::Scalar(scalar) => scalar
            .to_array()
            .ok()
            .and_then(|a| list_values(&a))
            .map_or(0, |v| v.len() as u64)
            .saturating_mul(rows as u64),
        ColumnarValue::Array(array) => list_values(array).map_or(0, |v| v.len() as u64),
    }
}

/// The memory of all of `value` over `rows` rows.
fn total(value: &ColumnarValue, rows: usize) -> u64 {
    match value {
        ColumnarValue::Scalar(scalar) => scalar_bytes(scalar).saturating_mul(rows as u64),
        ColumnarValue::Array(array) => array.get_array_memory_size() as u64,
    }
}

/// Each row's count (negative and null count as none).
fn counts(value: &ColumnarValue, rows: usize) -> Result<PerRow> {
    let ints = integers(value, rows)?;
    Ok(match ints {
        PerRowInt::Same(n) => PerRow::Same(n.max(0) as u64),
        PerRowInt::Each(values) => {
            PerRow::Each(values.into_iter().map(|n| n.max(0) as u64).collect())
        }
    })
}

enum PerRowInt {
    Same(i64),
    Each(Vec<i64>),
}

impl PerRowInt {
    fn at(&self, row: usize) -> i64 {
        match self {
            PerRowInt::Same(value) => *value,
            PerRowInt::Each(values) => values.get(row).copied().unwrap_or(0),
        }
    }
}

/// `value` as 64-bit integers (null as 0), casting what is not one.
fn integers(value: &ColumnarValue, rows: usize) -> Result<PerRowInt> {
    let array = value.to_array(if matches!(value, ColumnarValue::Scalar(_)) {
        1
    } else {
        rows
    })?;
    let array = cast(&array, &DataType::Int64)?;
    let array = array.as_primitive::<Int64Type>();
    let values: Vec<i64> = array.iter().map(|v| v.unwrap_or(0)).collect();
    Ok(match value {
        ColumnarValue::Scalar(_) => PerRowInt::Same(values.first().copied().unwrap_or(0)),
        ColumnarValue::Array(_) => PerRowInt::Each(values),
    })
}

/// The bytes of `range`/`generate_series` over integers, dates or timestamps.
fn series_bytes(values: &[ColumnarValue], rows: usize) -> Result<u64> {
    const DAY_NANOS: i128 = 86_400 * 1_000_000_000;
    if values.iter().any(|v| v.data_type().is_null()) {
        return Ok(0);
    }
    let temporal = values.first().is_some_and(|v| {
        matches!(
            v.data_type(),
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
        )
    });
    let (start, stop, step): (PerRowInt, PerRowInt, Box<dyn Fn(usize) -> i128>) = if temporal {
        let nanos = |value: &ColumnarValue| -> Result<PerRowInt> {
            let array = value.to_array(if matches!(value, ColumnarValue::Scalar(_)) {
                1
            } else {
                rows
            })?;
            let array = cast(&array, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
            integers(&ColumnarValue::Array(array), rows).map(|ints| match (value, ints) {
                (ColumnarValue::Scalar(_), PerRowInt::Each(v)) => {
                    PerRowInt::Same(v.first().copied().unwrap_or(0))
                }
                (_, ints) => ints,
            })
        };
        let (Some(start), Some(stop), Some(step)) = (values.first(), values.get(1), values.get(2))
        else {
            return Ok(0);
        };
        let steps: Vec<i128> = match step {
            ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) => {
                vec![(v.months as i128 * 28 + v.days as i128) * DAY_NANOS + v.nanoseconds as i128]
            }
            ColumnarValue::Array(array) if matches!(array.data_type(), DataType::Interval(_)) => {
                let array = cast(
                    array,
                    &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                )?;
                array
                    .as_primitive::<IntervalMonthDayNanoType>()
                    .iter()
                    .map(|v| {
                        v.map_or(1, |v| {
                            (v.months as i128 * 28 + v.days as i128) * DAY_NANOS
                                + v.nanoseconds as i128
                        })
                    })
                    .collect()
            }
            // A step the bound cannot read: refuse rather than guess.
            _ => return Ok(u64::MAX),
        };
        (
            nanos(start)?,
            nanos(stop)?,
            Box::new(move |row| steps.get(row).or(steps.first()).copied().unwrap_or(1)),
        )
    } else {
        let (start, stop, step) = match values {
            [stop] => (PerRowInt::Same(0), integers(stop, rows)?, None),
            [start, stop] => (integers(start, rows)?, integers(stop, rows)?, None),
            [start, stop, step, ..] => (
                integers(start, rows)?,
                integers(stop, rows)?,
                Some(integers(step, rows)?),
            ),
            [] => return Ok(0),
        };
        (
            start,
            stop,
            Box::new(move |row| step.as_ref().map_or(1, |s| s.at(row) as i128)),
        )
    };
    Ok((0..rows).fold(0u64, |sum, row| {
        let span = (stop.at(row) as i128 - start.at(row) as i128).unsigned_abs();
        let step = step(row).unsigned_abs().max(1);
        let count = u64::try_from(span / step + 1).unwrap_or(u64::MAX);
        sum.saturating_add(count.saturating_mul(8))
    }))
}

/// A function call whose output is reserved in the query's memory pool
/// before it is built. Delegates everything else to the function it wraps.
struct Bounded {
    inner: ScalarUDF,
    size: OutputSize,
    budget: Arc<Budget>,
}

impl fmt::Debug for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bounded")
            .field("inner", &self.inner.name())
            .field("size", &self.size)
            .finish()
    }
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.size == other.size
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.size.hash(state);
    }
}

impl Bounded {
    fn wrapped(&self) -> &dyn ScalarUDFImpl {
        self.inner.inner().as_ref()
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.wrapped().name()
    }

    fn aliases(&self) -> &[String] {
        self.wrapped().aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.wrapped().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.wrapped().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.wrapped().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.wrapped().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.wrapped().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.size.estimate(&args)?;
        let reservation = self.budget.admit(self.name(), bytes)?;
        let output = self.wrapped().invoke_with_args(args)?;
        if let ColumnarValue::Scalar(value) = &output {
            self.budget.keep(reservation, value.size());
        }
        Ok(output)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.wrapped().with_updated_config(config).map(|inner| {
            ScalarUDF::new_from_impl(Bounded {
                inner,
                size: self.size,
                budget: Arc::clone(&self.budget),
            })
        })
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // A rewrite may call the function it wraps (or another growing one)
        // again: those calls are bounded too.
        Ok(match self.wrapped().simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => ExprSimplifyResult::Simplified(
                expr.transform_up(|expr| bound(expr, &self.budget, None))?
                    .data,
            ),
            original => original,
        })
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.wrapped().preimage(args, lit_expr, info)
    }

    fn short_circuits(&self) -> bool {
        self.wrapped().short_circuits()
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.wrapped().conditional_arguments(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.wrapped().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.wrapped().propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.wrapped().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.wrapped().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.wrapped().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.wrapped().coerce_types(arg_types)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.wrapped().struct_field_mapping(literal_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.wrapped().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.wrapped().placement(args)
    }
}

/// The string `||` operator as a function, so that it can be [`Bounded`]: the
/// engine's own kernel, NULL when either side is.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    fn new() -> ConcatOperator {
        ConcatOperator {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        "||"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [left, right] => Ok(format!("{} || {}", left.schema_name(), right.schema_name())),
            _ => Err(DataFusionError::Internal("|| takes two operands".into())),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalars = args
            .args
            .iter()
            .all(|v| matches!(v, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [left, right] = arrays.as_slice() else {
            return Err(DataFusionError::Internal("|| takes two operands".into()));
        };
        let joined = concat_elements_dyn(left.as_ref(), right.as_ref())?;
        Ok(if scalars {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&joined, 0)?)
        } else {
            ColumnarValue::Array(joined)
        })
    }
}
