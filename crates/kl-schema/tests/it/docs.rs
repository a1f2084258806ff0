/// `docs/fields.md` is generated; this fails when it is stale.
/// Run `cargo xtask docs` and commit the result.
#[test]
fn fields_reference_is_fresh() {
    let committed = include_str!("../../../../docs/fields.md");
    let generated = kl_schema::fields_markdown();
    assert!(committed == generated, "docs/fields.md is stale: run `cargo xtask docs` and commit the result");
}
