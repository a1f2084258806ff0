//! `kl-splunk`: Kaspersky TIP lookups as a Splunk external lookup.
//!
//! Splunk runs the app's script with the lookup's input field; the script
//! runs this binary. stdin is a CSV: a header naming the lookup's fields
//! (the input first), then one row per value to look up, the outputs empty.
//! stdout is the same CSV, the same header, every row in order, with the
//! outputs kl knows filled in (the nested style's snake_case names: `zone`,
//! `categories`, `error`, `skipped`…).
//!
//! A list becomes several rows: the first row holds the scalar outputs and
//! each list's first value, and the rows after it repeat the input with the
//! next value of every list. Splunk merges the rows of one input into
//! multivalue fields (up to the lookup's `max_matches`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use kl_cli::exit;
use kl_cli::setup::{self, ConfigSearch, EngineSetup};
use kl_model::FunctionChoice;
use kl_schema::Style;
use kl_schema::splunk::MAX_MATCHES;
use serde_json::Value;

const NAME: &str = "kl-splunk";

/// Fill a Splunk external lookup's CSV with Kaspersky Threat Intelligence Portal answers.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about, long_about = None, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file. Default: $KL_CONFIG, else local/kl.yml in the app folder (beside bin/).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// One of the four report functions (get_ip_report…), any of the seven, or auto.
    #[arg(required = true)]
    function: Option<FunctionChoice>,
    /// The column holding the values to look up.
    #[arg(required = true)]
    input: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the config, the API's answer and the account (quota, token expiry).
    Check {
        /// The config file; found as for a lookup when not given.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print one JSON object, for monitoring.
        #[arg(long)]
        json: bool,
    },
}

const SEARCH: ConfigSearch = ConfigSearch { beside_binary: Some("local/kl.yml"), in_current_dir: None };

fn main() -> ExitCode {
    let args = match exit::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    exit::run_async(NAME, async {
        match args.command {
            Some(Command::Check { config, json }) => check(config, json).await,
            None => run(args).await,
        }
    })
}

async fn check(config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let config = setup::load_config(config.as_deref(), SEARCH)?;
    setup::start_logging(&config, false)?;
    let assembled = setup::engine(&config, EngineSetup { default_cache_dir: None, run_deadline: true })?;
    let report = kl_cli::check::run(&assembled).await;
    Ok(kl_cli::check::print(NAME, &report, json))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (Some(function), Some(input_column)) = (args.function, args.input) else {
        bail!("FUNCTION and INPUT are required, such as auto indicator");
    };
    let mut input = Vec::new();
    io::stdin().read_to_end(&mut input).context("cannot read stdin")?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input.as_slice());
    let header = reader.headers().context("stdin is not a CSV with a header")?.clone();
    let Some(column) = header.iter().position(|h| h == input_column) else {
        bail!("the CSV has no column {input_column:?}; its header is {:?}", header.iter().collect::<Vec<_>>());
    };
    let rows: Vec<csv::StringRecord> =
        reader.records().collect::<Result<_, _>>().context("stdin is not a well-formed CSV")?;

    let config = setup::load_config(args.config.as_deref(), SEARCH)?;
    setup::start_logging(&config, false)?;
    let default_cache_dir = config.base_dir.as_ref().map(|d| d.join("cache")).or_else(kl_core::store::xdg_cache_dir);
    let assembled = setup::engine(&config, EngineSetup { default_cache_dir, run_deadline: true })?;
    if let FunctionChoice::Fixed(f) = function {
        assembled.engine.supports(f).map_err(anyhow::Error::msg)?;
    }

    // Each distinct value once, concurrently; the engine validates it and
    // sends nothing for an invalid or withheld one.
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for row in &rows {
        let value = row.get(column).unwrap_or_default().trim();
        if value.is_empty() || answers.contains_key(value) {
            continue;
        }
        answers.insert(value.to_owned(), Value::Null);
        let (assembled, value, choice) = (assembled.clone(), value.to_owned(), function);
        tasks.spawn(async move {
            let looked = kl_cli::lookup::lookup(&assembled, choice, &value, Style::Nested, "kl").await;
            (value, looked.object)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (value, object) = joined.context("a lookup task failed")?;
        answers.insert(value, object.get("kl").cloned().unwrap_or(Value::Null));
    }
    assembled.engine.flush().await;

    let mut out = csv::WriterBuilder::new().from_writer(Vec::new());
    out.write_record(&header)?;
    for row in &rows {
        let value = row.get(column).unwrap_or_default().trim();
        match answers.get(value) {
            Some(Value::Object(fields)) if !value.is_empty() => {
                for record in filled(&header, row, column, fields) {
                    out.write_record(&record)?;
                }
            }
            _ => out.write_record(row)?,
        }
    }
    let bytes = out.into_inner().context("cannot write the CSV")?;
    io::stdout().lock().write_all(&bytes).context("cannot write stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `row` with the outputs in `fields` filled into the header's columns but
/// the input's; a
/// list spreads over as many rows as it has values (at most `MAX_MATCHES`),
/// each repeating the row's other input columns.
fn filled(
    header: &csv::StringRecord,
    row: &csv::StringRecord,
    input: usize,
    fields: &serde_json::Map<String, Value>,
) -> Vec<Vec<String>> {
    // The input column is never written over (an output may share its name).
    let values: Vec<Option<Vec<String>>> = header
        .iter()
        .enumerate()
        .map(|(c, h)| if c == input { None } else { fields.get(h).map(cell_values) })
        .collect();
    let depth = values.iter().flatten().map(Vec::len).max().unwrap_or(1).clamp(1, MAX_MATCHES);
    (0..depth)
        .map(|i| {
            header
                .iter()
                .enumerate()
                .map(|(c, _)| match &values[c] {
                    Some(vals) => vals.get(i).cloned().unwrap_or_default(),
                    // Not an output of ours: the input and any column we do
                    // not fill, as it came, on every row.
                    None => row.get(c).unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .collect()
}

/// A field's value as CSV cells: a list gives one cell per element.
fn cell_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(cell).collect(),
        other => vec![cell(other)],
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_spread_over_rows_and_other_columns_stay() {
        let header = csv::StringRecord::from(vec!["indicator", "zone", "categories", "note"]);
        let row = csv::StringRecord::from(vec!["8.8.8.8", "", "", "kept"]);
        let fields = json!({"zone": "Red", "categories": ["A", "B", "C"], "hits": 5, "indicator": "other"});
        let rows = filled(&header, &row, 0, fields.as_object().unwrap());
        assert_eq!(
            rows,
            vec![
                vec!["8.8.8.8", "Red", "A", "kept"],
                vec!["8.8.8.8", "", "B", "kept"],
                vec!["8.8.8.8", "", "C", "kept"],
            ]
        );
        let many = json!({"categories": (0..500).collect::<Vec<_>>()});
        assert_eq!(filled(&header, &row, 0, many.as_object().unwrap()).len(), MAX_MATCHES);
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&json!(12)), "12");
    }
}
