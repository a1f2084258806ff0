//! Answers from recorded responses in a directory, instead of the network.
//!
//! Layout (the same as `fixtures/responses/`):
//!
//! ```text
//! DIR/ip/<address>.json
//! DIR/domain/<lower-case domain>.json
//! DIR/url/<URL percent-encoded as one path segment>.json
//! DIR/hash/<UPPER-CASE hex>.json
//! ```
//!
//! Each file is a response body as the API sends it, usually holding every
//! section known for the object. The replay backend answers a lookup with
//! the sections its function asks for, as the API does with `sections=`.
//! A missing file is answered as HTTP 404 (no data, `Grey`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use kl_model::{Answer, Function, Indicator};

use super::{Backend, BackendInfo, Fetched, LookupFailure, decode_body};
use crate::error::Error;

/// Answers lookups from a directory of recorded responses.
#[derive(Debug, Clone)]
pub struct ReplayBackend {
    dir: PathBuf,
    /// Answer as OpenTIP would: only the four `*_report` functions.
    opentip: bool,
}

impl ReplayBackend {
    /// Opens a replay directory; it must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Result<ReplayBackend, crate::ConfigError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(crate::ConfigError::general(format!(
                "offline directory {} does not exist or is not a directory",
                dir.display()
            )));
        }
        Ok(ReplayBackend { dir, opentip: false })
    }

    /// Recorded OpenTIP answers: the `_file` functions are refused, as
    /// OpenTIP refuses them.
    pub fn as_opentip(mut self) -> ReplayBackend {
        self.opentip = true;
        self
    }

    /// The file that holds the recorded answer for `indicator`.
    pub fn path_for(dir: &Path, indicator: &Indicator) -> PathBuf {
        dir.join(indicator.kind().api_type()).join(format!("{}.json", indicator.path_segment()))
    }
}

/// File names longer than this cannot exist on common file systems.
const MAX_FILE_NAME: usize = 250;

#[async_trait]
impl Backend for ReplayBackend {
    async fn fetch(&self, function: Function, indicator: &Indicator) -> Result<Fetched, LookupFailure> {
        if indicator.path_segment().len() + ".json".len() > MAX_FILE_NAME {
            return Ok(Answer::NotFound.into());
        }
        let path = ReplayBackend::path_for(&self.dir, indicator);
        let body = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Answer::NotFound.into()),
            Err(e) => {
                return Err(Error::Replay { message: format!("cannot read {}: {e}", path.display()) });
            }
        };
        decode_body(&body, Some(function.sections()))
    }

    fn cache_scope(&self) -> String {
        format!("replay|{}", self.dir.display())
    }

    fn info(&self) -> BackendInfo {
        let name = if self.opentip { "replay (opentip)" } else { "replay" };
        BackendInfo { name, endpoint: self.dir.display().to_string(), auth: "none" }
    }

    fn supports(&self, function: Function) -> Result<(), String> {
        match function {
            Function::IpReportFile | Function::UrlReportFile | Function::DomainReportFile if self.opentip => {
                Err(format!(
                    "OpenTIP has no equivalent of {function} (KL_BACKEND: opentip answers only the four *_report functions)"
                ))
            }
            _ => Ok(()),
        }
    }
}
