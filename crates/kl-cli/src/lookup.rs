//! One indicator to one JSON object: `kl-generic-json lookup`, and kl-http's
//! lookup routes, print the same thing.

use crate::setup::Assembled;
use kl_model::{Function, FunctionChoice, Outcome};
use kl_schema::{Item, Style};
use serde_json::{Map, Value};

/// The result of one lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Looked {
    /// The function that was used (the IP report when `auto` found no type).
    pub function: Function,
    pub outcome: Outcome,
    /// The object written in `style`.
    pub object: Value,
}

/// Looks up `raw` and renders the answer in `style` (`target` is the key
/// the nested and ECS styles write under).
pub async fn lookup(assembled: &Assembled, choice: FunctionChoice, raw: &str, style: Style, target: &str) -> Looked {
    let (function, outcome) = match choice.resolve(raw) {
        Ok(f) => (f, assembled.engine.lookup(f, raw).await),
        Err(reason) => (Function::IpReport, Outcome::Failed(reason)),
    };
    let object = render(assembled, function, raw, &outcome, style, target);
    Looked { function, outcome, object }
}

/// One outcome as an object in `style`.
pub fn render(
    assembled: &Assembled,
    function: Function,
    raw: &str,
    outcome: &Outcome,
    style: Style,
    target: &str,
) -> Value {
    let item = Item { function, raw, field: None, target: None, outcome };
    let out = kl_schema::output(style, target, &assembled.ecs, &[item]);
    Value::Object(out.members.into_iter().collect::<Map<String, Value>>())
}
