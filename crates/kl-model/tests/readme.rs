//! The README's key table is generated from `kl_model::keys`; this fails
//! when it is stale. Run `cargo xtask docs` and commit the result.

#[test]
fn the_readme_key_table_is_fresh() {
    let committed = include_str!("../../../README.md");
    let generated = kl_model::keys::with_table(committed).expect("README.md has the key table markers");
    assert!(committed == generated, "the README's key table is stale: run `cargo xtask docs` and commit the result");
}
