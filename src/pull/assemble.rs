//! From the upstream's answers to one snapshot document, in our format
//! (docs/snapshot-format.md), copied consistently.
//!
//! The upstream serves reference data (levels, categories, teams) and pages of applications
//! as separate requests, and an analysis can finish between two of them. So the copy is
//! pinned: `LastAnalysisDate` first, every page asked for with `Date` set to that analysis's
//! UTC day, every `InfrastructureInfo` compared with it, and `LastAnalysisDate` again at the
//! end. If the analysis moved, `TotalResults` moved between pages, or the pages do not hold
//! every application exactly once, the copy starts over, a bounded number of times.
//!
//! The document is written as the pages arrive (applications come last in it), so a pull
//! holds one page and the document, not every page parsed. Its bytes depend only on the data:
//! the same answers give the same bytes, which is how a pull tells that nothing changed.

use std::collections::HashSet;
use std::time::SystemTime;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::fetch::Fetcher;
use super::progress::Progress;
use super::{Method, PullError};
use crate::snapshot::format::{Application, Category, Head, Named, Team, Writer};

/// Applications per page: the most the API allows.
pub const PAGE_LIMIT: u64 = 200;
/// Copies started before the pull gives up on a moving upstream.
pub const MAX_ROUNDS: u32 = 3;

/// A whole, consistent copy.
pub struct Pulled {
    /// The snapshot document.
    pub bytes: Vec<u8>,
    /// `LastAnalyzedOn` as the upstream wrote it.
    pub last_analyzed_on: String,
    /// Copies that were started over.
    pub restarts: u32,
    pub applications: usize,
    pub modules: usize,
    /// `PatternFinding` entries, application and module level together.
    pub findings: usize,
}

/// Copies the upstream, starting over when it moved, at most [`MAX_ROUNDS`] times.
/// `max_bytes` bounds the document (the admin port would refuse a larger one).
pub fn pull(
    fetcher: &mut Fetcher,
    progress: &mut Progress,
    max_bytes: u64,
) -> Result<Pulled, PullError> {
    let mut restarts = 0;
    loop {
        match copy_once(fetcher, progress, max_bytes) {
            Ok(mut pulled) => {
                pulled.restarts = restarts;
                return Ok(pulled);
            }
            Err(Round::Moved(reason)) if restarts + 1 < MAX_ROUNDS => {
                restarts += 1;
                progress.restart(&reason, restarts + 1, MAX_ROUNDS);
            }
            Err(Round::Moved(reason)) => {
                return Err(PullError::Unstable { rounds: MAX_ROUNDS, last: reason });
            }
            Err(Round::Failed(error)) => return Err(error),
        }
    }
}

enum Round {
    /// The upstream changed underneath, or its paging was not whole: try again.
    Moved(String),
    Failed(PullError),
}

impl From<PullError> for Round {
    fn from(error: PullError) -> Self {
        Self::Failed(error)
    }
}

fn copy_once(
    fetcher: &mut Fetcher,
    progress: &mut Progress,
    max_bytes: u64,
) -> Result<Pulled, Round> {
    let first: Info = answer(fetcher, Method::LastAnalysisDate, "", None)?;
    let pinned = Pinned::new(&first)?;
    let levels: LevelAnswer = answer(fetcher, Method::Level, "", None)?;
    pinned.check(Method::Level, None, levels.info.as_ref())?;
    let categories: CategoryAnswer = answer(fetcher, Method::Category, "", None)?;
    pinned.check(Method::Category, None, categories.info.as_ref())?;
    let teams: TeamAnswer = answer(fetcher, Method::Team, "", None)?;
    pinned.check(Method::Team, None, teams.info.as_ref())?;

    let head = Head {
        format_version: 1,
        last_analyzed_on: &first.last_analyzed_on,
        levels: &levels.levels,
        categories: &categories.categories,
        teams: &teams.teams,
    };
    // The same writer as `snapshot export`: the same data gives the same bytes.
    let mut document = Writer::start(&head, 1024 * 1024).map_err(cannot_render)?;

    let mut seen: HashSet<String> = HashSet::new();
    let (mut modules, mut findings) = (0, 0);
    let mut total: Option<u64> = None;
    let mut offset = 0u64;
    let mut pin_date = true;
    loop {
        let query = match pin_date {
            true => format!("Limit={PAGE_LIMIT}&Offset={offset}&Date={}", pinned.day),
            false => format!("Limit={PAGE_LIMIT}&Offset={offset}"),
        };
        let page: ApplicationAnswer =
            match answer(fetcher, Method::Application, &query, Some(offset)) {
                Ok(page) => page,
                // The API does not say which day `Date` means; an upstream that files the
                // analysis under another day answers 404. Then each page is held to the
                // analysis by its InfrastructureInfo alone, and by the final check.
                Err(PullError::Refused { status: 404, .. }) if pin_date && offset == 0 => {
                    log::warn!(
                        "upstream: no data for Date={}; copying without Date, each page checked \
                         against the analysis of {}",
                        pinned.day,
                        first.last_analyzed_on
                    );
                    pin_date = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
        pinned.check(Method::Application, Some(offset), page.info.as_ref())?;
        let page_total = page.page.as_ref().and_then(|p| p.total_results).ok_or_else(|| {
            PullError::Malformed {
                method: Method::Application,
                offset: Some(offset),
                path: "$.Page.TotalResults".into(),
                reason: "missing: without it the pages cannot be checked whole".into(),
            }
        })?;
        let page_total = u64::try_from(page_total).unwrap_or(0);
        match total {
            None => total = Some(page_total),
            Some(t) if t != page_total => {
                return Err(Round::Moved(format!(
                    "TotalResults moved from {t} to {page_total} at Offset={offset}"
                )));
            }
            Some(_) => {}
        }
        for (i, app) in page.applications.iter().enumerate() {
            if !seen.insert(app.guid.to_lowercase()) {
                return Err(Round::Moved(format!(
                    "the page at Offset={offset} repeats application {} ($.Applications[{i}]), \
                     already on an earlier page",
                    app.guid
                )));
            }
            document.application(app).map_err(cannot_render)?;
            modules += app.modules.len();
            findings += app.findings.len();
            findings += app.modules.iter().map(|m| m.findings.len()).sum::<usize>();
        }
        if document.len() as u64 > max_bytes {
            return Err(Round::Failed(PullError::TooBig {
                bytes: document.len() as u64,
                max_bytes,
            }));
        }
        let fetched = page.applications.len() as u64;
        offset += fetched;
        progress.fetched(offset, page_total);
        if offset >= page_total {
            break;
        }
        if fetched == 0 {
            return Err(Round::Moved(format!(
                "the page at Offset={offset} is empty, but TotalResults is {page_total}"
            )));
        }
    }
    let total = total.unwrap_or(0);
    if seen.len() as u64 != total {
        return Err(Round::Moved(format!(
            "the pages held {} applications, but TotalResults is {total}",
            seen.len()
        )));
    }
    let document = document.finish();

    let last: Info = answer(fetcher, Method::LastAnalysisDate, "", None)?;
    if last.last_analyzed_on != first.last_analyzed_on {
        return Err(Round::Moved(format!(
            "a new analysis ({}) finished while {} was being copied",
            last.last_analyzed_on, first.last_analyzed_on
        )));
    }
    Ok(Pulled {
        bytes: document,
        last_analyzed_on: first.last_analyzed_on,
        restarts: 0,
        applications: seen.len(),
        modules,
        findings,
    })
}

/// The analysis being copied: its timestamp and the `Date` that pins pages to it.
struct Pinned {
    at: SystemTime,
    /// `YYYY-MM-DD`, the UTC day of the analysis.
    day: String,
}

impl Pinned {
    fn new(info: &Info) -> Result<Self, PullError> {
        let text = &info.last_analyzed_on;
        let malformed = || PullError::Malformed {
            method: Method::LastAnalysisDate,
            offset: None,
            path: "$.LastAnalyzedOn".into(),
            reason: format!("`{}` is not an RFC 3339 UTC timestamp", text.escape_debug()),
        };
        let at = humantime::parse_rfc3339(text).map_err(|_| malformed())?;
        let day = humantime::format_rfc3339_seconds(at).to_string();
        Ok(Self { at, day: day.get(..10).ok_or_else(malformed)?.to_owned() })
    }

    /// An answer of another analysis than the one being copied means it moved.
    fn check(&self, method: Method, offset: Option<u64>, info: Option<&Info>) -> Result<(), Round> {
        // `InfrastructureInfo` is optional in the API's schema: nothing to compare then.
        let Some(info) = info else { return Ok(()) };
        match humantime::parse_rfc3339(&info.last_analyzed_on) {
            Ok(at) if at == self.at => Ok(()),
            Ok(_) => Err(Round::Moved(format!(
                "{} answered for the analysis of {}, not the one being copied",
                method.name(),
                info.last_analyzed_on
            ))),
            Err(_) => Err(Round::Failed(PullError::Malformed {
                method,
                offset,
                path: "$.InfrastructureInfo.LastAnalyzedOn".into(),
                reason: format!(
                    "`{}` is not an RFC 3339 UTC timestamp",
                    info.last_analyzed_on.escape_debug()
                ),
            })),
        }
    }
}

/// Fetches and parses one answer, naming the method, offset and JSON path of what is wrong.
fn answer<T: DeserializeOwned>(
    fetcher: &mut Fetcher,
    method: Method,
    query: &str,
    offset: Option<u64>,
) -> Result<T, PullError> {
    let body = fetcher.get(method, query)?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| PullError::Malformed {
        method,
        offset,
        path: crate::snapshot::json_path(e.path()),
        reason: e.into_inner().to_string(),
    })?;
    // Trailing bytes after the document are as wrong as a broken one.
    de.end().map_err(|e| PullError::Malformed {
        method,
        offset,
        path: "$".into(),
        reason: e.to_string(),
    })?;
    Ok(parsed)
}

fn cannot_render(e: serde_json::Error) -> PullError {
    PullError::Setup(format!("cannot render: {e}"))
}

// What the upstream answers (the API's schema, /work's aims-v1-api.md §2.6) and, with the same
// field names, what the snapshot holds. Unknown fields are ignored: the hosted service may add
// some. A field the snapshot needs and the answer lacks is an error with its path.

/// `InfrastructureInfo`, and the bare answer of `TechnicalDebt_LastAnalysisDate`.
#[derive(Deserialize)]
struct Info {
    #[serde(rename = "LastAnalyzedOn")]
    last_analyzed_on: String,
}

#[derive(Deserialize)]
struct LevelAnswer {
    #[serde(rename = "InfrastructureInfo", default)]
    info: Option<Info>,
    #[serde(rename = "Levels")]
    levels: Vec<Named>,
}

#[derive(Deserialize)]
struct CategoryAnswer {
    #[serde(rename = "InfrastructureInfo", default)]
    info: Option<Info>,
    #[serde(rename = "Categories")]
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct TeamAnswer {
    #[serde(rename = "InfrastructureInfo", default)]
    info: Option<Info>,
    #[serde(rename = "Teams", default)]
    teams: Vec<Team>,
}

#[derive(Deserialize)]
struct ApplicationAnswer {
    #[serde(rename = "InfrastructureInfo", default)]
    info: Option<Info>,
    #[serde(rename = "Applications", default)]
    applications: Vec<Application>,
    #[serde(rename = "Page", default)]
    page: Option<Page>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "TotalResults", default)]
    total_results: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Info {
        Info { last_analyzed_on: text.to_owned() }
    }

    #[test]
    fn the_pinned_day_is_the_analysis_utc_day() {
        assert_eq!(Pinned::new(&info("2024-05-14T06:00:09.417Z")).unwrap().day, "2024-05-14");
        assert_eq!(Pinned::new(&info("2024-05-14T23:59:59.999Z")).unwrap().day, "2024-05-14");
        match Pinned::new(&info("14/05/2024")) {
            Err(PullError::Malformed { method, path, reason, .. }) => {
                assert_eq!((method, path.as_str()), (Method::LastAnalysisDate, "$.LastAnalyzedOn"));
                assert_eq!(reason, "`14/05/2024` is not an RFC 3339 UTC timestamp");
            }
            _ => panic!("accepted a date that is not RFC 3339"),
        }
    }

    #[test]
    fn an_answer_of_another_analysis_means_the_upstream_moved() {
        let pinned = Pinned::new(&info("2024-05-14T06:00:09.417Z")).unwrap();
        // The same instant written differently is the same analysis.
        assert!(
            pinned.check(Method::Level, None, Some(&info("2024-05-14T06:00:09.417000Z"))).is_ok()
        );
        assert!(pinned.check(Method::Level, None, None).is_ok());
        match pinned.check(Method::Team, None, Some(&info("2024-05-14T18:00:00.000Z"))) {
            Err(Round::Moved(reason)) => assert_eq!(
                reason,
                "TechnicalDebt_Team answered for the analysis of 2024-05-14T18:00:00.000Z, not \
                 the one being copied"
            ),
            _ => panic!("a different analysis was not noticed"),
        }
    }
}
