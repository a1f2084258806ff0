//! The seven lookup functions of the DNIF plugin: name, object type, sections.

use std::fmt;
use std::str::FromStr;

use crate::indicator::{Indicator, ObjectKind};

/// One of the seven lookups, named as DNIF queries call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    IpReport,
    IpReportFile,
    UrlReport,
    UrlReportFile,
    DomainReport,
    DomainReportFile,
    HashReport,
}

impl Function {
    /// Every function, in the order the documentation lists them.
    pub const ALL: [Function; 7] = [
        Function::IpReport,
        Function::IpReportFile,
        Function::UrlReport,
        Function::UrlReportFile,
        Function::DomainReport,
        Function::DomainReportFile,
        Function::HashReport,
    ];

    /// The name DNIF queries use (`get_ip_report`).
    pub fn name(self) -> &'static str {
        match self {
            Function::IpReport => "get_ip_report",
            Function::IpReportFile => "get_ip_report_file",
            Function::UrlReport => "get_url_report",
            Function::UrlReportFile => "get_url_report_file",
            Function::DomainReport => "get_domain_report",
            Function::DomainReportFile => "get_domain_report_file",
            Function::HashReport => "get_hash_report",
        }
    }

    /// The kind of object the function looks up.
    pub fn object(self) -> ObjectKind {
        match self {
            Function::IpReport | Function::IpReportFile => ObjectKind::Ipv4,
            Function::UrlReport | Function::UrlReportFile => ObjectKind::Url,
            Function::DomainReport | Function::DomainReportFile => ObjectKind::Domain,
            Function::HashReport => ObjectKind::Hash,
        }
    }

    /// The report function for an object kind (what `auto` picks).
    pub(crate) fn report_for(kind: ObjectKind) -> Function {
        match kind {
            ObjectKind::Ipv4 => Function::IpReport,
            ObjectKind::Domain => Function::DomainReport,
            ObjectKind::Url => Function::UrlReport,
            ObjectKind::Hash => Function::HashReport,
        }
    }

    /// The sections the function asks for, `LicenseInfo` first.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Function::IpReport => &["LicenseInfo", "Zone", "IpGeneralInfo", "IpWhoIs", "IpDnsResolutions"],
            Function::IpReportFile => &["LicenseInfo", "FilesDownloadedFromIp", "HostedUrls"],
            Function::UrlReport => &[
                "LicenseInfo",
                "Zone",
                "UrlGeneralInfo",
                "UrlDomainWhoIs",
                "UrlReferrals",
                "UrlReferredTo",
                "DomainDnsResolutions",
            ],
            Function::UrlReportFile | Function::DomainReportFile => {
                &["LicenseInfo", "FilesAccessed", "FilesDownloaded"]
            }
            Function::DomainReport => &[
                "LicenseInfo",
                "Zone",
                "DomainGeneralInfo",
                "DomainWhoIsInfo",
                "DomainDnsResolutions",
                "UrlReferrals",
                "UrlReferredTo",
                "Subdomains",
            ],
            Function::HashReport => {
                &["LicenseInfo", "Zone", "FileGeneralInfo", "DetectionsInfo", "FileNames", "FileAccessedUrls"]
            }
        }
    }

    /// The `sections=` value: the sections joined with commas.
    pub fn sections_param(self) -> String {
        self.sections().join(",")
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of [`Function::from_str`]: names the value and the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown function {given:?}; expected one of: {}", Function::ALL.map(Function::name).join(", "))]
pub struct UnknownFunction {
    given: String,
}

impl FromStr for Function {
    type Err = UnknownFunction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Function::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| UnknownFunction { given: s.to_owned() })
    }
}

/// A function, or `auto`: the report function for each value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionChoice {
    Auto,
    Fixed(Function),
}

impl FromStr for FunctionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            return Ok(FunctionChoice::Auto);
        }
        s.parse::<Function>().map(FunctionChoice::Fixed).map_err(|e| format!("{e}, or auto"))
    }
}

impl fmt::Display for FunctionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionChoice::Auto => f.write_str("auto"),
            FunctionChoice::Fixed(function) => function.fmt(f),
        }
    }
}

impl FunctionChoice {
    /// The function for a raw indicator, or why there is none.
    pub fn resolve(self, raw: &str) -> Result<Function, String> {
        match self {
            FunctionChoice::Fixed(f) => Ok(f),
            FunctionChoice::Auto => Indicator::detect(raw).map(Function::report_for).ok_or_else(|| {
                let shown: String = raw.trim().chars().take(80).collect();
                format!("cannot tell the type of indicator {shown:?}: not an IPv4 address, domain, URL or hash")
            }),
        }
    }

    /// The kind of object looked up, when the function is fixed.
    pub fn object(self) -> Option<ObjectKind> {
        match self {
            FunctionChoice::Fixed(f) => Some(f.object()),
            FunctionChoice::Auto => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Function::ALL {
            assert_eq!(f.name().parse::<Function>().unwrap(), f);
        }
        assert!("get_ipv6_report".parse::<Function>().is_err());
        assert_eq!(" get_hash_report ".parse::<Function>().unwrap(), Function::HashReport);
    }

    #[test]
    fn auto_picks_the_report_function_by_type() {
        let auto: FunctionChoice = "auto".parse().unwrap();
        assert_eq!(auto.resolve("8.8.8.8"), Ok(Function::IpReport));
        assert_eq!(auto.resolve("example.com"), Ok(Function::DomainReport));
        assert_eq!(auto.resolve("http://example.com/x"), Ok(Function::UrlReport));
        assert_eq!(auto.resolve(&"a".repeat(32)), Ok(Function::HashReport));
        assert!(auto.resolve("not an indicator").unwrap_err().contains("cannot tell the type"));
        assert!("get_nothing".parse::<FunctionChoice>().unwrap_err().ends_with("or auto"));
        assert_eq!("get_hash_report".parse(), Ok(FunctionChoice::Fixed(Function::HashReport)));
    }

    #[test]
    fn every_function_asks_for_license_info_first() {
        for f in Function::ALL {
            assert_eq!(f.sections()[0], "LicenseInfo", "{f}");
        }
        assert_eq!(Function::IpReport.sections_param(), "LicenseInfo,Zone,IpGeneralInfo,IpWhoIs,IpDnsResolutions");
    }
}
