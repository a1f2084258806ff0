//! TIP zones: the colour verdict on an object.

use std::cmp::Ordering;
use std::fmt;

/// A zone as the API reports it.
///
/// Parsing never fails: a value we do not know is kept as
/// [`Zone::Unknown`] so that a new colour on the server side degrades to
/// "left out" instead of a failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Zone {
    Red,
    Orange,
    Yellow,
    Grey,
    Green,
    Unknown(String),
}

impl Zone {
    /// The known colours, most severe first (the order of zone families).
    pub const KNOWN: [Zone; 5] = [Zone::Red, Zone::Orange, Zone::Yellow, Zone::Grey, Zone::Green];

    /// Parses a zone case-insensitively; `Gray` means `Grey`.
    pub fn parse(s: &str) -> Zone {
        match s.trim().to_ascii_lowercase().as_str() {
            "red" => Zone::Red,
            "orange" => Zone::Orange,
            "yellow" => Zone::Yellow,
            "grey" | "gray" => Zone::Grey,
            "green" => Zone::Green,
            _ => Zone::Unknown(s.to_owned()),
        }
    }

    /// The canonical spelling (`Grey`, never `Gray`); an unknown value as given.
    pub fn as_str(&self) -> &str {
        match self {
            Zone::Red => "Red",
            Zone::Orange => "Orange",
            Zone::Yellow => "Yellow",
            Zone::Grey => "Grey",
            Zone::Green => "Green",
            Zone::Unknown(s) => s,
        }
    }

    /// Severity rank: Red 4 > Orange 3 > Yellow 2 > Grey 1 > Green 0; unknown has none.
    pub fn severity(&self) -> Option<u8> {
        match self {
            Zone::Red => Some(4),
            Zone::Orange => Some(3),
            Zone::Yellow => Some(2),
            Zone::Grey => Some(1),
            Zone::Green => Some(0),
            Zone::Unknown(_) => None,
        }
    }
}

/// Which Kaspersky portal answers: where a person looks an indicator up,
/// and what ECS calls the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Portal {
    /// The commercial Threat Intelligence Portal.
    #[default]
    Tip,
    /// The free OpenTIP.
    OpenTip,
}

impl Portal {
    /// The provider's name.
    pub fn name(self) -> &'static str {
        match self {
            Portal::Tip => "Kaspersky Threat Intelligence Portal",
            Portal::OpenTip => "Kaspersky OpenTIP",
        }
    }

    /// The portal's page about an indicator (its normalised value).
    pub fn page(self, indicator: &str) -> String {
        let encoded = crate::encode_segment(indicator);
        match self {
            Portal::Tip => format!("https://tip.kaspersky.com/search?searchString={encoded}"),
            Portal::OpenTip => format!("https://opentip.kaspersky.com/{encoded}/"),
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Orders by severity; unknown zones sort below every known one.
impl Ord for Zone {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.severity(), other.severity()) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => self.as_str().cmp(other.as_str()),
        }
    }
}

impl PartialOrd for Zone {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_pages() {
        assert_eq!(Portal::Tip.page("8.8.8.8"), "https://tip.kaspersky.com/search?searchString=8.8.8.8");
        assert_eq!(Portal::OpenTip.page("http://a.com/?x"), "https://opentip.kaspersky.com/http%3A%2F%2Fa.com%2F%3Fx/");
    }

    #[test]
    fn parses_case_insensitively_and_gray_is_grey() {
        assert_eq!(Zone::parse("RED"), Zone::Red);
        assert_eq!(Zone::parse("orange"), Zone::Orange);
        assert_eq!(Zone::parse("Gray"), Zone::Grey);
        assert_eq!(Zone::parse("gReY"), Zone::Grey);
        assert_eq!(Zone::parse("Purple"), Zone::Unknown("Purple".into()));
        assert_eq!(Zone::parse(""), Zone::Unknown(String::new()));
    }

    #[test]
    fn severity_order() {
        let mut zones = vec![Zone::Green, Zone::Unknown("x".into()), Zone::Red, Zone::Grey, Zone::Yellow, Zone::Orange];
        zones.sort();
        assert_eq!(
            zones,
            vec![Zone::Unknown("x".into()), Zone::Green, Zone::Grey, Zone::Yellow, Zone::Orange, Zone::Red]
        );
        assert!(Zone::Red > Zone::Orange && Zone::Orange > Zone::Yellow);
    }
}
