//! History benchmark: a deterministic history of daily snapshots in which a chosen share of the
//! applications changes each day (issue 12, "A year of history").
//!
//! `bench/history.sh` runs it; see there for the table it prints.
//!
//!     history-bench day FILE --day N --churn PCT [--apps N] [--modules N] [--findings N]
//!     history-bench pages STATE_DIR [--dates N]
//!
//! `day` writes the snapshot of day N (0-based) of the history. Day 0 is the benchmark snapshot
//! of `bench/snapshot.rs` (same shape and content: 2,000 applications, 20,000 modules, 400,000
//! findings by default, about 49 MiB), dated 2025-01-01; day N is dated N days later, analysed
//! at 06:00Z. On each day after day 0, PCT % of the applications (rounded to a whole number of
//! applications, the same number every day, chosen by a hash of the day and the application)
//! change their findings (patterns and counts) and their level, and so do their modules. What
//! an application looks like on day N depends only on the last day it changed, so one that did
//! not change is byte-identical to the day before. Teams and patterns change rarely: when PCT
//! is above 0, a team is renamed every 30th day and a pattern every 90th; at 0 % every day
//! holds the same data (only `LastAnalyzedOn` moves).
//!
//! `pages` opens a stopped server's state folder the way `serve` does (the history store, with
//! the default memory settings) and answers `Limit=200` pages through `api::answer`, exactly as
//! the event loop calls it: the newest date's, then one page of each of N dates drawn at random,
//! each twice in a row (first touch: read from the store; second: once touched). It prints one line,
//! `open_ms newest_ms first_ms second_ms rss_mib`: the slowest page of each kind, and the
//! process's resident memory after all of them, for `bench/history.sh` to put in its table.
//!
//! One day is generated directly, without the days before it: the last change day of each
//! application is found by walking the days backwards until every application has one (or day
//! 0 is reached), which costs a hash per application and day walked, not a snapshot.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use aims_api::snapshot::Date;

#[path = "common.rs"]
mod common;
use common::guid;
use lexopt::prelude::*;

const USAGE: &str = "usage: history-bench day FILE --day N --churn PCT [--apps N] [--modules N] \
                     [--findings N]\n       history-bench pages STATE_DIR [--dates N] [--detail]";

const CATEGORIES: usize = 8;
const PATTERNS_PER_CATEGORY: usize = 12;
const PATTERNS: usize = CATEGORIES * PATTERNS_PER_CATEGORY;
const LEVELS: [&str; 4] = ["Low", "Medium", "High", "Critical"];
const TEAMS: usize = 20;
/// 2025-01-01T00:00:00Z, the date of day 0.
const DAY_0_UNIX_SECS: u64 = 1_735_689_600;
/// A hundred years of days: far more than any run, small enough that no date overflows.
const MAX_DAY: u32 = 36_500;
/// A team is renamed every this many days (when anything changes at all).
const TEAM_RENAME_DAYS: u32 = 30;
/// A pattern is renamed every this many days (when anything changes at all).
const PATTERN_RENAME_DAYS: u32 = 90;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("history-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut parser = lexopt::Parser::from_env();
    let command = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(command)) => command.string().map_err(|e| e.to_string())?,
        _ => return Err(USAGE.into()),
    };
    // One function per subcommand, each parsing its own options from the same parser.
    match command.as_str() {
        "day" => day(DayArgs::parse(&mut parser)?),
        "pages" => pages(PagesArgs::parse(&mut parser)?),
        other => Err(format!("unknown subcommand `{other}`\n{USAGE}")),
    }
}

/// The size of each day's snapshot; the defaults are `bench/snapshot.rs`'s.
#[derive(Debug, Clone, Copy)]
struct Shape {
    apps: usize,
    modules: usize,
    findings: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self { apps: 2_000, modules: 20_000, findings: 400_000 }
    }
}

struct DayArgs {
    file: PathBuf,
    day: u32,
    churn_pct: f64,
    shape: Shape,
}

impl DayArgs {
    fn parse(parser: &mut lexopt::Parser) -> Result<Self, String> {
        let mut file = None;
        let mut day = None;
        let mut churn_pct = None;
        let mut shape = Shape::default();
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Value(value) if file.is_none() => file = Some(PathBuf::from(value)),
                Long("day") => day = Some(number(parser, "--day")?),
                Long("churn") => churn_pct = Some(number(parser, "--churn")?),
                Long("apps") => shape.apps = number(parser, "--apps")?,
                Long("modules") => shape.modules = number(parser, "--modules")?,
                Long("findings") => shape.findings = number(parser, "--findings")?,
                _ => return Err(format!("{}\n{USAGE}", arg.unexpected())),
            }
        }
        let file = file.ok_or_else(|| format!("day: the output FILE is missing\n{USAGE}"))?;
        let day: u32 = day.ok_or_else(|| format!("day: --day N is missing\n{USAGE}"))?;
        let churn_pct: f64 =
            churn_pct.ok_or_else(|| format!("day: --churn PCT is missing\n{USAGE}"))?;
        if day > MAX_DAY {
            return Err(format!(
                "--day {day} is past the last day this generator dates ({MAX_DAY})"
            ));
        }
        if !(0.0..=100.0).contains(&churn_pct) {
            return Err(format!("--churn {churn_pct} is not a percentage from 0 to 100"));
        }
        if shape.apps == 0 {
            return Err("--apps must be at least 1".into());
        }
        Ok(Self { file, day, churn_pct, shape })
    }
}

/// The value of option `name`, parsed (underscores allowed as digit separators: `400_000`).
fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String> {
    let value = parser.value().map_err(|e| format!("{name}: {e}"))?;
    let text = value.string().map_err(|e| e.to_string())?;
    text.replace('_', "").parse().map_err(|_| format!("{name} needs a number, not `{text}`"))
}

/// `history-bench day`: writes the snapshot of one day and says what it holds.
fn day(args: DayArgs) -> Result<(), String> {
    let started = Instant::now();
    let history = History::new(args.shape, args.churn_pct);
    let last_change = history.last_changes(args.day);
    let changed_today = last_change.iter().filter(|&&d| d == args.day && d > 0).count();
    let changed_ever = last_change.iter().filter(|&&d| d > 0).count();
    let json = history.snapshot(args.day, &last_change);
    std::fs::write(&args.file, &json).map_err(|e| format!("{}: {e}", args.file.display()))?;
    // The first words are what bench/history.sh reads: the day and its date.
    println!(
        "day {} {}: {changed_today} of {} applications changed that day ({changed_ever} since \
         day 0), {:.1} MiB in {:.3} s -> {}",
        args.day,
        date_of(args.day),
        args.shape.apps,
        json.len() as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        args.file.display()
    );
    Ok(())
}

/// The date of day `day`: 2025-01-01 plus `day` days.
fn date_of(day: u32) -> Date {
    Date::of(UNIX_EPOCH + Duration::from_secs(DAY_0_UNIX_SECS + u64::from(day) * 86_400))
}

/// A history: a shape, and how many applications change each day.
struct History {
    shape: Shape,
    changed_per_day: usize,
    /// GUIDs of the levels, categories and patterns, written once instead of per finding.
    level_guids: Vec<String>,
    category_guids: Vec<String>,
    pattern_guids: Vec<String>,
}

impl History {
    fn new(shape: Shape, churn_pct: f64) -> Self {
        let apps = shape.apps as f64;
        // Bounded to 0..=apps by the percentage check; a whole number of applications a day.
        let changed_per_day = ((apps * churn_pct / 100.0).round() as usize).min(shape.apps);
        Self {
            shape,
            changed_per_day,
            level_guids: (0..LEVELS.len()).map(|i| guid(1, i)).collect(),
            category_guids: (0..CATEGORIES).map(|c| guid(2, c)).collect(),
            pattern_guids: (0..PATTERNS).map(|p| guid(3, p)).collect(),
        }
    }

    /// The applications that change on `day` (1 or later): the `changed_per_day` with the
    /// smallest hash of (day, application).
    fn changed_on(&self, day: u32) -> Vec<usize> {
        let mut ranked: Vec<(u64, usize)> =
            (0..self.shape.apps).map(|a| (mix(u64::from(day) << 32 | a as u64), a)).collect();
        if self.changed_per_day < ranked.len() {
            ranked.select_nth_unstable(self.changed_per_day);
            ranked.truncate(self.changed_per_day);
        }
        ranked.into_iter().map(|(_, a)| a).collect()
    }

    /// For each application, the last day up to `day` on which it changed (0: never since day
    /// 0). Walks the days backwards and stops as soon as every application has one.
    fn last_changes(&self, day: u32) -> Vec<u32> {
        let mut last = vec![0; self.shape.apps];
        if self.changed_per_day == 0 {
            return last;
        }
        let mut unknown = self.shape.apps;
        for d in (1..=day).rev() {
            for a in self.changed_on(d) {
                if last[a] == 0 {
                    last[a] = d;
                    unknown -= 1;
                }
            }
            if unknown == 0 {
                break;
            }
        }
        last
    }

    /// The last day up to `day` on which rename number r (made every `every` days, on item
    /// `r * step % items`) renamed `item`; None if it never was or nothing changes at all.
    fn renamed_on(
        &self,
        day: u32,
        every: u32,
        step: usize,
        items: usize,
        item: usize,
    ) -> Option<u32> {
        if self.changed_per_day == 0 {
            return None;
        }
        (1..=day / every).rev().find(|&r| r as usize * step % items == item).map(|r| r * every)
    }

    /// The snapshot JSON of `day`, given each application's last change day.
    fn snapshot(&self, day: u32, last_change: &[u32]) -> String {
        let o = self.shape;
        let modules_per_app = o.modules / o.apps;
        // As bench/snapshot.rs: a fifth of the findings at application level, the rest spread
        // over the modules.
        let per_app = (o.findings / 5 / o.apps).min(PATTERNS);
        let per_module =
            (o.findings.saturating_sub(per_app * o.apps) / o.modules.max(1)).min(PATTERNS);
        let mut out = String::with_capacity(o.findings * 130 + o.modules * 200);
        let _ = write!(
            out,
            "{{\"FormatVersion\":1,\"LastAnalyzedOn\":\"{}T06:00:00.000Z\",\"Levels\":[",
            date_of(day)
        );
        for (i, name) in LEVELS.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ =
                write!(out, "{sep}{{\"GUID\":\"{}\",\"Name\":\"{name}\"}}", self.level_guids[i]);
        }
        out.push_str("],\"Categories\":[");
        for c in 0..CATEGORIES {
            let sep = if c > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"GUID\":\"{}\",\"Name\":\"Category {c}\",\"Patterns\":[",
                self.category_guids[c]
            );
            for p in 0..PATTERNS_PER_CATEGORY {
                let sep = if p > 0 { "," } else { "" };
                let n = c * PATTERNS_PER_CATEGORY + p;
                let _ = write!(
                    out,
                    "{sep}{{\"GUID\":\"{}\",\"Name\":\"Pattern {n}{}\"}}",
                    self.pattern_guids[n],
                    renamed(self.renamed_on(day, PATTERN_RENAME_DAYS, 11, PATTERNS, n))
                );
            }
            out.push_str("]}");
        }
        out.push_str("],\"Teams\":[");
        for t in 0..TEAMS {
            let sep = if t > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"ExternalId\":\"{}\",\"Name\":\"Team {t}{}\",\"Applications\":[",
                guid(4, t),
                renamed(self.renamed_on(day, TEAM_RENAME_DAYS, 7, TEAMS, t))
            );
            for (i, a) in (t..o.apps).step_by(TEAMS).enumerate() {
                let sep = if i > 0 { "," } else { "" };
                let _ = write!(out, "{sep}{{\"GUID\":\"{}\"}}", guid(5, a));
            }
            out.push_str("]}");
        }
        out.push_str("],\"Applications\":[");
        for (a, &version) in last_change.iter().enumerate() {
            let sep = if a > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"GUID\":\"{}\",\"Name\":\"Application {:05}\",\"LevelGUID\":\"{}\",\
                 \"Findings\":",
                guid(5, a),
                (a * 7919) % o.apps,
                self.level_guids[level(a, version)]
            );
            self.findings(&mut out, per_app, a, version);
            out.push_str(",\"Modules\":[");
            for m in 0..modules_per_app {
                let sep = if m > 0 { "," } else { "" };
                let _ = write!(
                    out,
                    "{sep}{{\"GUID\":\"{}\",\"Name\":\"App{a}_Module{m}\",\"LevelGUID\":\"{}\",\
                     \"Findings\":",
                    guid(6, a * modules_per_app + m),
                    self.level_guids[level(a + m, version)]
                );
                self.findings(&mut out, per_module, a + m, version);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }

    /// A `Findings` array of `n` distinct patterns. Version 0 is bench/snapshot.rs's array for
    /// `seed`; each later version (the day of the change) shifts the patterns and adds the day
    /// to every count, so two versions of one array always differ.
    fn findings(&self, out: &mut String, n: usize, seed: usize, version: u32) {
        let shift = version as usize * 7;
        out.push('[');
        for k in 0..n {
            let pattern = (seed * 5 + shift + k) % PATTERNS;
            let sep = if k > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"CategoryGUID\":\"{}\",\"PatternGUID\":\"{}\",\"Count\":{}}}",
                self.category_guids[pattern / PATTERNS_PER_CATEGORY],
                self.pattern_guids[pattern],
                (seed * 31 + k * 17) % 250 + version as usize
            );
        }
        out.push(']');
    }
}

/// The level of an application or module (`seed`) in `version`: bench/snapshot.rs's in
/// version 0, turned by the day of the change after that.
fn level(seed: usize, version: u32) -> usize {
    (seed + version as usize) % LEVELS.len()
}

/// The suffix a renamed team or pattern carries: the day of its last rename.
fn renamed(day: Option<u32>) -> String {
    day.map_or_else(String::new, |d| format!(" (renamed on day {d})"))
}

/// SplitMix64's finaliser: a well-spread hash of a 64-bit key, the same on every machine.
fn mix(key: u64) -> u64 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct PagesArgs {
    state_dir: PathBuf,
    dates: usize,
    /// Where a first touch goes: the index, then the page's applications, each timed.
    detail: bool,
}

impl PagesArgs {
    fn parse(parser: &mut lexopt::Parser) -> Result<Self, String> {
        let mut state_dir = None;
        let mut dates = 30;
        let mut detail = false;
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Value(path) if state_dir.is_none() => state_dir = Some(PathBuf::from(path)),
                Long("dates") => dates = number(parser, "--dates")?,
                Long("detail") => detail = true,
                other => return Err(format!("{}\n{USAGE}", other.unexpected())),
            }
        }
        Ok(Self { state_dir: state_dir.ok_or(USAGE)?, dates, detail })
    }
}

/// Times `Limit=200` pages in-process over a stopped server's history store.
fn pages(args: PagesArgs) -> Result<(), String> {
    use aims_api::snapshot::Snapshots;
    use aims_api::snapshot::store::{Compaction, Memory};

    let started = Instant::now();
    let (memory, compaction) = (Memory::default(), Compaction::default());
    let snapshots = Snapshots::open(&args.state_dir, "BENCH", memory, compaction, &mut |_, _| {})
        .map_err(|e| e.to_string())?;
    let open = started.elapsed();
    let catalog = snapshots.catalog();
    let newest = catalog.newest().map(|s| s.date()).ok_or("the store holds no date")?;
    let mut older: Vec<Date> =
        catalog.newest_first().map(|e| e.date).filter(|d| *d != newest).collect();
    // Distinct dates drawn with a fixed seed (Fisher-Yates with `mix` as the generator).
    let picks = args.dates.min(older.len());
    for i in 0..picks {
        let j = i + (mix(0xda7e_u64 + i as u64) as usize) % (older.len() - i);
        older.swap(i, j);
    }
    older.truncate(picks);

    let page = |date: Option<Date>| -> Result<Duration, String> {
        let query = date.map_or(String::new(), |d| format!("&Date={d}"));
        let path = format!("/AIMentorStudioAPI/rest/v1/TechnicalDebt_Application?Limit=200{query}");
        common::timed_with(&snapshots, &path, "").map(|(elapsed, _)| elapsed)
    };
    let slowest = |times: &[Duration]| times.iter().max().copied().unwrap_or_default();
    let newest_times: Vec<Duration> = (0..20).map(|_| page(None)).collect::<Result<_, _>>()?;
    if args.detail {
        return detail(&snapshots, &older);
    }
    // Each date twice in a row: read from the store, then once touched.
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for date in &older {
        first.push(page(Some(*date))?);
        second.push(page(Some(*date))?);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:.1} {:.2} {:.1} {:.2} {}",
        ms(open),
        ms(slowest(&newest_times)),
        ms(slowest(&first)),
        ms(slowest(&second)),
        common::status_kib("VmRSS") / 1024
    );
    Ok(())
}

/// `pages --detail`: each date's first touch in its two steps, read from the store in the
/// blocking mode as a pool thread would: the date's index, then the `Limit=200` page's
/// applications (read and decompressed). Prints the median and the slowest of each, in ms.
fn detail(snapshots: &aims_api::snapshot::Snapshots, dates: &[Date]) -> Result<(), String> {
    use aims_api::snapshot::Mode;
    let (mut index, mut pieces) = (Vec::new(), Vec::new());
    for date in dates {
        let started = Instant::now();
        let dated = snapshots.date(Some(*date), Mode::Blocking).map_err(|e| e.to_string())?;
        let dated = dated.ok_or("a picked date is not served")?;
        index.push(started.elapsed());
        let started = Instant::now();
        let apps = dated.applications(0..200, Mode::Blocking).map_err(|e| e.to_string())?;
        pieces.push(started.elapsed());
        drop(apps);
    }
    let show = |name: &str, times: &mut Vec<Duration>| {
        times.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let slowest = times.last().copied().unwrap_or_default();
        println!("{name}: median {:.2} ms, slowest {:.2} ms", ms(median), ms(slowest));
    };
    show("index", &mut index);
    show("applications", &mut pieces);
    Ok(())
}
