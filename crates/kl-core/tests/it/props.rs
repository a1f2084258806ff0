//! Property tests for the parsers of untrusted input.

use kl_core::{Indicator, ObjectKind};
use proptest::prelude::*;

const KINDS: [ObjectKind; 4] = [ObjectKind::Ipv4, ObjectKind::Domain, ObjectKind::Url, ObjectKind::Hash];

/// Strings that look like indicators often enough to reach every branch.
fn indicatorish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "[ \t]{0,2}[a-zA-Z0-9_-]{1,20}(\\.[a-zA-Z0-9_-]{1,20}){1,4}\\.?[ \t]{0,2}",
        "[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}",
        "(https?://)?[a-z0-9.-]{1,30}(/[ -~]{0,40})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_never_panics_and_normalising_is_idempotent(raw in indicatorish()) {
        for kind in KINDS {
            if let Ok(ind) = Indicator::parse(kind, &raw) {
                let again = Indicator::parse(kind, ind.as_str()).expect("a normalised indicator parses");
                prop_assert_eq!(again.as_str(), ind.as_str());
                prop_assert_eq!(again.kind(), kind);
            }
        }
        let _ = Indicator::detect(&raw);
    }

    #[test]
    fn the_encoded_indicator_is_exactly_one_path_segment(raw in indicatorish()) {
        for kind in KINDS {
            let Ok(ind) = Indicator::parse(kind, &raw) else { continue };
            let seg = ind.path_segment();
            prop_assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{}", seg);
            let url = reqwest::Url::parse(&format!("https://tip.example/api/{}/{seg}?sections=Zone", kind.api_type())).unwrap();
            let segments: Vec<&str> = url.path_segments().unwrap().collect();
            prop_assert_eq!(segments.len(), 3);
            prop_assert_eq!(segments[2], seg.as_str());
            let decoded = percent_encoding::percent_decode_str(&seg).decode_utf8().unwrap();
            prop_assert_eq!(decoded.as_ref(), ind.as_str());
            prop_assert_eq!(url.query(), Some("sections=Zone"));
        }
    }
}
