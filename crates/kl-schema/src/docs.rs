//! The reference of every field, generated from the tables (`docs/fields.md`).

pub fn fields_markdown() -> String {
    String::new()
}
