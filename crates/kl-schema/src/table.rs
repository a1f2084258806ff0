//! The field tables: one row per documented `$KL` field of every function.

use kl_model::Function;

/// How a field's value is built from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value at `path`, JSON type kept.
    Scalar { path: &'static [&'static str] },
    /// The object's zone at `path`, in canonical spelling (`Gray` → `Grey`).
    Zone { path: &'static [&'static str] },
    /// Values collected into a de-duplicated list, in first-seen order.
    ///
    /// `path` leads to an array. With `item`, each element is a record and
    /// the value is its first present key of `item`; without, the elements
    /// are the values.
    List { path: &'static [&'static str], item: Option<&'static [&'static str]> },
    /// As `List`, but a record's value may itself be a list, whose elements
    /// are merged in (the union of the records' lists).
    Union { path: &'static [&'static str], item: &'static [&'static str] },
    /// One list field per zone colour: `$KL{Zone}<suffix>`, records split
    /// by their `Zone`.
    ZoneFamily { path: &'static [&'static str], item: &'static str },
    /// One field per WHOIS contact role and attribute: `$KL{Role}{Attr}`.
    Contacts { path: &'static [&'static str], attrs: &'static [&'static str] },
    /// `start-end` from the object at `path`, only when both ends exist.
    Range { path: &'static [&'static str], start: &'static [&'static str], end: &'static [&'static str] },
    /// The number of distinct values of `item` in the array at `path`;
    /// absent when 0.
    Count { path: &'static [&'static str], item: &'static str },
}

/// The keys that name a WHOIS contact's role, the first present winning.
pub(crate) const ROLE_KEYS: &[&str] = &["Role", "ContactType"];

/// One documented field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The `$KL` name. For families it is the suffix after the zone colour
    /// or the role (`Md5` of `$KL{Zone}Md5`); empty for contacts.
    pub kl: &'static str,
    /// The snake_case name for nested output; for families, the part after
    /// `{zone}_` or `{role}_`.
    pub snake: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

impl FieldSpec {
    /// The name as the docs show it: `$KLZone`, `$KL{Zone}Md5`, `$KL{Role}{Attr}`.
    pub fn display_name(&self) -> String {
        match self.kind {
            Kind::ZoneFamily { .. } => format!("$KL{{Zone}}{}", self.kl),
            Kind::Contacts { .. } => "$KL{Role}{Attr}".to_owned(),
            _ => format!("$KL{}", self.kl),
        }
    }

    /// The snake_case name as the docs show it.
    pub fn display_snake(&self) -> String {
        match self.kind {
            Kind::ZoneFamily { .. } => format!("{{zone}}_{}", self.snake),
            Kind::Contacts { .. } => "{role}_{attr}".to_owned(),
            _ => self.snake.to_owned(),
        }
    }
}

/// The field holding the zone, and the Grey answer for "no data".
pub const ZONE_FIELD: &str = "$KLZone";
/// The field holding why a lookup failed.
pub const ERROR_FIELD: &str = "$KLError";
/// The field holding why a lookup was not made.
pub const SKIPPED_FIELD: &str = "$KLSkipped";

macro_rules! row {
    ($kl:literal, $snake:literal, $kind:expr, $desc:literal) => {
        FieldSpec { kl: $kl, snake: $snake, kind: $kind, description: $desc }
    };
}

use Kind::*;

const fn scalar(path: &'static [&'static str]) -> Kind {
    Scalar { path }
}

const IP_REPORT: &[FieldSpec] = &[
    row!("Zone", "zone", Zone { path: &["Zone"] }, "zone of the IP address"),
    row!(
        "Category",
        "categories",
        List { path: &["IpGeneralInfo", "Categories"], item: None },
        "categories of the IP address"
    ),
    row!("FirstSeen", "first_seen", scalar(&["IpGeneralInfo", "FirstSeen"]), "when Kaspersky first saw the address"),
    row!("Hits", "hits", scalar(&["IpGeneralInfo", "HitsCount"]), "hit count (popularity) of the address"),
    row!(
        "ThreatScore",
        "threat_score",
        scalar(&["IpGeneralInfo", "ThreatScore"]),
        "probability that the address is dangerous, 0 to 100"
    ),
    row!(
        "HasAdvancedPersistThreat",
        "has_apt",
        scalar(&["IpGeneralInfo", "HasApt"]),
        "whether the address is tied to an APT attack"
    ),
    row!(
        "CountryCode",
        "country_code",
        scalar(&["IpGeneralInfo", "CountryCode"]),
        "country of the address (an addition to the 2018 fields)"
    ),
    row!(
        "IPDNSResolustionsCategories",
        "dns_resolution_categories",
        Union { path: &["IpDnsResolutions"], item: &["Categories"] },
        "categories of the domains that resolve to the address (documented spelling kept)"
    ),
    row!(
        "IPDNSResolustionsDomains",
        "dns_resolution_domains",
        List { path: &["IpDnsResolutions"], item: Some(&["Domain"]) },
        "domains that resolve to the address (documented spelling kept)"
    ),
    row!(
        "Created",
        "net_created",
        scalar(&["IpWhoIs", "Net", "Created"]),
        "when the network of the address was registered"
    ),
    row!("Changed", "net_changed", scalar(&["IpWhoIs", "Net", "Changed"]), "when the network's record last changed"),
    row!(
        "IPRange",
        "net_range",
        Range { path: &["IpWhoIs", "Net"], start: &["StartIp", "RangeStart"], end: &["EndIp", "RangeEnd"] },
        "address range of the network, `start-end`"
    ),
    row!("Netname", "net_name", scalar(&["IpWhoIs", "Net", "Name"]), "name of the network"),
    row!("NetDescription", "net_description", scalar(&["IpWhoIs", "Net", "Description"]), "description of the network"),
    row!(
        "ASN",
        "asn",
        List { path: &["IpWhoIs", "Asn"], item: Some(&["Origin", "Number"]) },
        "autonomous system numbers"
    ),
    row!(
        "ASDescription",
        "as_description",
        Union { path: &["IpWhoIs", "Asn"], item: &["Description"] },
        "autonomous system descriptions"
    ),
    row!(
        "",
        "",
        Contacts {
            path: &["IpWhoIs", "Contacts"],
            attrs: &["Address", "Email", "Fax", "Name", "OrganizationId", "Phone"]
        },
        "IP WHOIS contacts, one field per role and attribute (`$KLOwnerEmail`)"
    ),
];

const IP_REPORT_FILE: &[FieldSpec] = &[
    row!(
        "HostedURL",
        "hosted_urls",
        List { path: &["HostedUrls"], item: Some(&["Url"]) },
        "URLs hosted on the address"
    ),
    row!(
        "Md5",
        "downloaded_files_md5",
        ZoneFamily { path: &["FilesDownloadedFromIp"], item: "Md5" },
        "MD5 of files downloaded from the address, by the file's zone"
    ),
];

macro_rules! whois_block {
    ($root:literal) => {
        &[
            row!("Created", "whois_created", scalar(&[$root, "Created"]), "when the domain was registered"),
            row!("Updated", "whois_updated", scalar(&[$root, "Updated"]), "when the registration was last updated"),
            row!("Expires", "whois_expires", scalar(&[$root, "Expires"]), "when the paid registration term ends"),
            row!("DomainName", "whois_domain_name", scalar(&[$root, "DomainName"]), "the registered domain name"),
            row!(
                "DomainStatus",
                "whois_domain_status",
                List { path: &[$root, "DomainStatus"], item: None },
                "statuses of the domain"
            ),
            row!(
                "NameServers",
                "whois_name_servers",
                List { path: &[$root, "NameServers"], item: None },
                "name servers of the domain"
            ),
            row!(
                "RegistrationOrganization",
                "whois_registration_organization",
                scalar(&[$root, "RegistrationOrganization"]),
                "the registration organisation"
            ),
            row!(
                "RegistrarEmail",
                "registrar_email",
                scalar(&[$root, "Registrar", "Email"]),
                "e-mail of the registrar"
            ),
            row!(
                "RegistrarIanaId",
                "registrar_iana_id",
                scalar(&[$root, "Registrar", "IanaId"]),
                "IANA ID of the registrar"
            ),
            row!("RegistrarInfo", "registrar_name", scalar(&[$root, "Registrar", "Info"]), "name of the registrar"),
            row!(
                "",
                "",
                Contacts {
                    path: &[$root, "Contacts"],
                    attrs: &[
                        "Address",
                        "City",
                        "CountryCode",
                        "Email",
                        "Fax",
                        "Name",
                        "Organization",
                        "Phone",
                        "PostalCode",
                        "State"
                    ]
                },
                "WHOIS contacts, one field per contact type and attribute (`$KLRegistrantEmail`)"
            ),
        ]
    };
}

const URL_WHOIS: &[FieldSpec] = whois_block!("UrlDomainWhoIs");
const DOMAIN_WHOIS: &[FieldSpec] = whois_block!("DomainWhoIsInfo");

const URL_REPORT: &[FieldSpec] = &[
    row!("Zone", "zone", Zone { path: &["Zone"] }, "zone of the URL"),
    row!(
        "UrlReferredTo",
        "url_referred_to",
        ZoneFamily { path: &["UrlReferredTo"], item: "Url" },
        "URLs the URL leads to, by their zone"
    ),
    row!(
        "UrlReferrals",
        "url_referrals",
        ZoneFamily { path: &["UrlReferrals"], item: "Url" },
        "URLs that lead to the URL, by their zone"
    ),
    row!(
        "URLCategories",
        "categories",
        List { path: &["UrlGeneralInfo", "Categories"], item: None },
        "categories of the URL"
    ),
    row!("FilesCount", "files_count", scalar(&["UrlGeneralInfo", "FilesCount"]), "number of files known for the URL"),
    row!(
        "IPv4Count",
        "ipv4_count",
        scalar(&["UrlGeneralInfo", "Ipv4Count"]),
        "number of IPv4 addresses known for the URL"
    ),
    row!(
        "HasAdvancedPersistThreat",
        "has_apt",
        scalar(&["UrlGeneralInfo", "HasApt"]),
        "whether the URL is tied to an APT attack"
    ),
    row!("URL", "url", scalar(&["UrlGeneralInfo", "Url"]), "the URL as the portal knows it"),
    row!("Host", "host", scalar(&["UrlGeneralInfo", "Host"]), "the host of the URL"),
    row!(
        "IPResoutions",
        "ip_resolutions",
        ZoneFamily { path: &["DomainDnsResolutions"], item: "Ip" },
        "addresses the URL's domain resolves to, by their zone (documented spelling kept)"
    ),
];

const FILES_ACCESSED_DOWNLOADED: &[FieldSpec] = &[
    row!(
        "FileAccessedMd5",
        "files_accessed_md5",
        ZoneFamily { path: &["FilesAccessed"], item: "Md5" },
        "MD5 of files that accessed the object, by the file's zone"
    ),
    row!(
        "FileDownloadedMd5",
        "files_downloaded_md5",
        ZoneFamily { path: &["FilesDownloaded"], item: "Md5" },
        "MD5 of files downloaded from the object, by the file's zone"
    ),
];

const DOMAIN_REPORT: &[FieldSpec] = &[
    row!("Zone", "zone", Zone { path: &["Zone"] }, "zone of the domain"),
    row!(
        "Categories",
        "categories",
        List { path: &["DomainGeneralInfo", "Categories"], item: None },
        "categories of the domain"
    ),
    row!("Domain", "domain", scalar(&["DomainGeneralInfo", "Domain"]), "the domain as the portal knows it"),
    row!(
        "FilesCount",
        "files_count",
        scalar(&["DomainGeneralInfo", "FilesCount"]),
        "number of files known for the domain"
    ),
    row!("Hits", "hits", scalar(&["DomainGeneralInfo", "HitsCount"]), "hit count (popularity) of the domain"),
    row!(
        "IPv4Count",
        "ipv4_count",
        scalar(&["DomainGeneralInfo", "Ipv4Count"]),
        "number of IPv4 addresses known for the domain"
    ),
    row!("URLCount", "urls_count", scalar(&["DomainGeneralInfo", "UrlsCount"]), "number of URLs known on the domain"),
    row!(
        "HasAdvancedPersistThreat",
        "has_apt",
        scalar(&["DomainGeneralInfo", "HasApt"]),
        "whether the domain is tied to an APT attack"
    ),
    row!(
        "DomainDnsResolutionsIP",
        "dns_resolution_ips",
        ZoneFamily { path: &["DomainDnsResolutions"], item: "Ip" },
        "addresses the domain resolves to, by their zone"
    ),
    row!(
        "URLReferrals",
        "url_referrals",
        ZoneFamily { path: &["UrlReferrals"], item: "Url" },
        "URLs that lead to the domain, by their zone"
    ),
    row!(
        "URLReferredTo",
        "url_referred_to",
        ZoneFamily { path: &["UrlReferredTo"], item: "Url" },
        "URLs the domain leads to, by their zone"
    ),
    row!(
        "SubdomainsFilesCount",
        "subdomains_count",
        Count { path: &["Subdomains"], item: "Subdomain" },
        "number of distinct subdomains"
    ),
    row!(
        "Subdomains",
        "subdomains",
        ZoneFamily { path: &["Subdomains"], item: "Subdomain" },
        "subdomains, by their zone"
    ),
];

const HASH_REPORT: &[FieldSpec] = &[
    row!("Zone", "zone", Zone { path: &["Zone"] }, "zone of the file"),
    row!(
        "Hits",
        "hits",
        scalar(&["FileGeneralInfo", "HitsCount"]),
        "hit count (popularity) of the file, rounded to a power of ten"
    ),
    row!("FirstSeen", "first_seen", scalar(&["FileGeneralInfo", "FirstSeen"]), "when Kaspersky first saw the file"),
    row!("LastSeen", "last_seen", scalar(&["FileGeneralInfo", "LastSeen"]), "when Kaspersky last saw the file"),
    row!("Md5", "md5", scalar(&["FileGeneralInfo", "Md5"]), "MD5 of the file"),
    row!("Sha1", "sha1", scalar(&["FileGeneralInfo", "Sha1"]), "SHA-1 of the file"),
    row!("Sha256", "sha256", scalar(&["FileGeneralInfo", "Sha256"]), "SHA-256 of the file"),
    row!("Format", "format", scalar(&["FileGeneralInfo", "Type"]), "file format"),
    row!("Size", "size", scalar(&["FileGeneralInfo", "Size"]), "size in bytes"),
    row!("Signer", "signer", scalar(&["FileGeneralInfo", "Signer"]), "organisation that signed the file"),
    row!("Packer", "packer", scalar(&["FileGeneralInfo", "Packer"]), "packer of the file"),
    row!(
        "FileStatus",
        "file_status",
        scalar(&["FileGeneralInfo", "FileStatus"]),
        "status of the file (an addition to the 2018 fields)"
    ),
    row!(
        "DetectionNames",
        "detection_names",
        List { path: &["DetectionsInfo"], item: Some(&["DetectionName"]) },
        "names of the detections"
    ),
    row!(
        "DescriptionURL",
        "detection_description_urls",
        List { path: &["DetectionsInfo"], item: Some(&["DescriptionUrl"]) },
        "links to descriptions of the detections"
    ),
    row!(
        "FileNames",
        "file_names",
        Union { path: &["FileNames"], item: &["FileName", "FileNames"] },
        "names the file was seen under"
    ),
    row!(
        "FileAccessedURL",
        "accessed_urls",
        ZoneFamily { path: &["FileAccessedUrls"], item: "Url" },
        "URLs the file accessed, by the URL's zone"
    ),
    row!(
        "FileAccessedDomain",
        "accessed_domains",
        ZoneFamily { path: &["FileAccessedUrls"], item: "Domain" },
        "domains of the URLs the file accessed, by the URL's zone"
    ),
];

/// The rows of a function, in output order.
pub fn table(function: Function) -> impl Iterator<Item = &'static FieldSpec> {
    let parts: &[&'static [FieldSpec]] = match function {
        Function::IpReport => &[IP_REPORT],
        Function::IpReportFile => &[IP_REPORT_FILE],
        Function::UrlReport => &[URL_REPORT, URL_WHOIS],
        Function::UrlReportFile | Function::DomainReportFile => &[FILES_ACCESSED_DOWNLOADED],
        Function::DomainReport => &[DOMAIN_REPORT, DOMAIN_WHOIS],
        Function::HashReport => &[HASH_REPORT],
    };
    parts.iter().flat_map(|p| p.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(kind: &Kind) -> Vec<&'static str> {
        match *kind {
            Scalar { path } | Zone { path } | List { path, .. } | Union { path, .. } => {
                vec![path[0]]
            }
            ZoneFamily { path, .. } | Contacts { path, .. } | Range { path, .. } | Count { path, .. } => vec![path[0]],
        }
    }

    #[test]
    fn every_source_is_a_requested_section() {
        for f in Function::ALL {
            for row in table(f) {
                for s in sources(&row.kind) {
                    assert!(f.sections().contains(&s), "{f}: {} reads {s}, which is not requested", row.display_name());
                }
            }
        }
    }

    #[test]
    fn names_are_unique_per_function_and_snake_case() {
        for f in Function::ALL {
            let mut seen = std::collections::HashSet::new();
            for row in table(f) {
                assert!(seen.insert(row.display_name()), "{f}: {} twice", row.display_name());
                assert!(row.snake.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                assert!(!row.snake.contains("resolus") && !row.snake.contains("resout"), "{}", row.snake);
            }
        }
    }
}
