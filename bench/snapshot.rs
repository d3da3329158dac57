//! Snapshot benchmark: generate a large snapshot, time its load and the API's pages in-process.
//!
//! `bench/snapshot.sh` runs it (and then the same file through the real server); see there.
//!
//!     snapshot-bench generate FILE [--apps N] [--modules N] [--findings N]
//!     snapshot-bench load FILE [--runs N] [--pages N]
//!
//! `generate` writes a valid snapshot of N applications, N modules and N finding entries
//! (defaults 2,000, 20,000 and 400,000: the target), deterministically. `load` reads it
//! the way `serve` does at start (read the file, parse, check, render), several times, then
//! answers `Limit=200` pages through `api::answer` exactly as the event loop calls it (and
//! gzip-coded pages of 10, 50 and 200), and prints the figures with the process's peak RSS,
//! and what compressing the applications alone costs and saves at each level. Generation and
//! load run in two processes so that the peak RSS of `load` is the load's own.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aims_api::gzip;
use aims_api::snapshot::store::{Memory, Source};
use aims_api::snapshot::{self, Date, Snapshots};

#[path = "common.rs"]
mod common;
use common::{guid, status_kib, timed_with};

const DATE: &str = "2024-05-14";
const CATEGORIES: usize = 8;
const PATTERNS_PER_CATEGORY: usize = 12;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let command = args.next().ok_or(USAGE)?;
    let file = PathBuf::from(args.next().ok_or(USAGE)?);
    let mut options =
        Options { apps: 2_000, modules: 20_000, findings: 400_000, runs: 5, pages: 200 };
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--apps" => options.apps = value,
            "--modules" => options.modules = value,
            "--findings" => options.findings = value,
            "--runs" => options.runs = value.max(1),
            "--pages" => options.pages = value.max(1),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    match command.as_str() {
        "generate" => generate(&file, &options),
        "load" => load(&file, &options),
        _ => Err(USAGE.into()),
    }
}

const USAGE: &str = "usage: snapshot-bench generate|load FILE [--apps N] [--modules N] \
                     [--findings N] [--runs N] [--pages N]";

struct Options {
    apps: usize,
    modules: usize,
    findings: usize,
    runs: usize,
    pages: usize,
}

fn generate(file: &PathBuf, o: &Options) -> Result<(), String> {
    let started = Instant::now();
    let modules_per_app = o.modules / o.apps.max(1);
    // Findings: a fifth at application level, the rest spread over the modules.
    let per_app = (o.findings / 5 / o.apps.max(1)).min(CATEGORIES * PATTERNS_PER_CATEGORY);
    let per_module = ((o.findings - per_app * o.apps) / o.modules.max(1))
        .min(CATEGORIES * PATTERNS_PER_CATEGORY);
    let mut out = String::with_capacity(o.findings * 120 + o.modules * 200);
    out.push_str(
        "{\"FormatVersion\":1,\"LastAnalyzedOn\":\"2024-05-14T06:00:00.000Z\",\"Levels\":[",
    );
    for (i, name) in ["Low", "Medium", "High", "Critical"].iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(out, "{sep}{{\"GUID\":\"{}\",\"Name\":\"{name}\"}}", guid(1, i));
    }
    out.push_str("],\"Categories\":[");
    for c in 0..CATEGORIES {
        let sep = if c > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{sep}{{\"GUID\":\"{}\",\"Name\":\"Category {c}\",\"Patterns\":[",
            guid(2, c)
        );
        for p in 0..PATTERNS_PER_CATEGORY {
            let sep = if p > 0 { "," } else { "" };
            let n = c * PATTERNS_PER_CATEGORY + p;
            let _ = write!(out, "{sep}{{\"GUID\":\"{}\",\"Name\":\"Pattern {n}\"}}", guid(3, n));
        }
        out.push_str("]}");
    }
    out.push_str("],\"Teams\":[");
    let teams = 20;
    for t in 0..teams {
        let sep = if t > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{sep}{{\"ExternalId\":\"{}\",\"Name\":\"Team {t}\",\"Applications\":[",
            guid(4, t)
        );
        for (i, a) in (t..o.apps).step_by(teams).enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(out, "{sep}{{\"GUID\":\"{}\"}}", guid(5, a));
        }
        out.push_str("]}");
    }
    out.push_str("],\"Applications\":[");
    let mut written = 0;
    let mut module = 0;
    for a in 0..o.apps {
        let sep = if a > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{sep}{{\"GUID\":\"{}\",\"Name\":\"Application {:05}\",\"LevelGUID\":\"{}\",\
             \"Findings\":",
            guid(5, a),
            (a * 7919) % o.apps,
            guid(1, a % 4)
        );
        written += findings(&mut out, per_app, a);
        out.push_str(",\"Modules\":[");
        for m in 0..modules_per_app {
            let sep = if m > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"GUID\":\"{}\",\"Name\":\"App{a}_Module{m}\",\"LevelGUID\":\"{}\",\
                 \"Findings\":",
                guid(6, module),
                guid(1, (a + m) % 4)
            );
            written += findings(&mut out, per_module, a + m);
            out.push('}');
            module += 1;
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    std::fs::write(file, &out).map_err(|e| format!("{}: {e}", file.display()))?;
    println!(
        "generated {}: {} applications, {module} modules, {written} findings, {:.1} MiB in {:.2} s",
        file.display(),
        o.apps,
        out.len() as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A `Findings` array of `n` distinct patterns, starting at a pattern chosen by `seed`.
fn findings(out: &mut String, n: usize, seed: usize) -> usize {
    let total = CATEGORIES * PATTERNS_PER_CATEGORY;
    out.push('[');
    for k in 0..n {
        let pattern = (seed * 5 + k) % total;
        let sep = if k > 0 { "," } else { "" };
        let _ = write!(
            out,
            "{sep}{{\"CategoryGUID\":\"{}\",\"PatternGUID\":\"{}\",\"Count\":{}}}",
            guid(2, pattern / PATTERNS_PER_CATEGORY),
            guid(3, pattern),
            (seed * 31 + k * 17) % 250
        );
    }
    out.push(']');
    n
}

fn load(file: &PathBuf, o: &Options) -> Result<(), String> {
    let date = Date::parse(DATE).map_err(|e| e.to_string())?;
    let mut loads = Vec::new();
    let mut loaded = None;
    for _ in 0..o.runs {
        // Drop the previous one first, so that runs do not stack up in memory.
        drop(loaded.take());
        let started = Instant::now();
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let result = snapshot::load(&bytes, date, "BENCH-ACTIVATION-CODE");
        drop(bytes);
        loads.push(started.elapsed());
        loaded = Some(result.map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let snapshot = loaded.ok_or("no run")?;
    let stats = snapshot.stats();
    let apps = stats.applications;
    println!(
        "snapshot: {apps} applications, {} modules, {} findings; file {:.1} MiB, rendered \
         {:.1} MiB, compressed forms {:.1} MiB",
        stats.modules,
        stats.findings,
        stats.file_bytes as f64 / 1048576.0,
        stats.rendered_bytes as f64 / 1048576.0,
        stats.compressed_bytes as f64 / 1048576.0
    );
    println!("load (read + parse + check + render), {} runs: {}", o.runs, summary(&mut loads));
    let rss_after_load = status_kib("VmRSS");
    compression_levels(&snapshot)?;
    drop(snapshot);
    // Pages are answered from a store, as `serve` answers them: the file imported into one
    // kept in memory (the import is the one `PUT /snapshots/<date>` makes).
    let catalog = Snapshots::in_memory("BENCH-ACTIVATION-CODE", Memory::default())
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let started = Instant::now();
    catalog.import(date, &mut bytes.as_slice(), Source::Import).map_err(|e| e.to_string())?;
    println!("import into an empty store: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
    drop(bytes);

    let offsets: Vec<usize> = (0..apps).step_by(200).collect();
    let mut page_bytes = 0;
    let mut pages = Vec::new();
    for i in 0..o.pages {
        let offset = offsets[i % offsets.len()];
        let path = format!(
            "/AIMentorStudioAPI/rest/v1/TechnicalDebt_Application?Limit=200&Offset={offset}"
        );
        let (elapsed, bytes) = timed(&catalog, &path)?;
        pages.push(elapsed);
        page_bytes = page_bytes.max(bytes);
    }
    println!(
        "Limit=200 page, {} requests over every offset (body up to {:.1} MiB): {}",
        o.pages,
        page_bytes as f64 / 1048576.0,
        summary(&mut pages)
    );
    // The same pages gzip-coded: stitched from the segments compressed at load.
    for limit in [10, 50, 200] {
        let mut times = Vec::new();
        let mut plain_bytes = 0;
        let mut gzip_bytes = 0;
        for i in 0..o.pages {
            let offset = offsets[i % offsets.len()];
            let path = format!(
                "/AIMentorStudioAPI/rest/v1/TechnicalDebt_Application?Limit={limit}&Offset={offset}"
            );
            plain_bytes += timed(&catalog, &path)?.1;
            let (elapsed, bytes) = timed_with(&catalog, &path, "Accept-Encoding: gzip\r\n")?;
            times.push(elapsed);
            gzip_bytes += bytes;
        }
        println!(
            "Limit={limit} page gzip-coded ({:.1}x fewer bytes): {}",
            plain_bytes as f64 / gzip_bytes as f64,
            summary(&mut times)
        );
    }
    for (what, path) in [
        (
            "Level (shared bytes)",
            "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level".to_owned(),
        ),
        ("Team (shared bytes)", "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Team".to_owned()),
        (
            "default page (Limit=20)",
            "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Application".to_owned(),
        ),
        (
            "ModuleGUID filter",
            format!(
                "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Application?ModuleGUID={}",
                guid(6, 12_345 % stats.modules.max(1))
            ),
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..o.pages {
            times.push(timed(&catalog, &path)?.0);
        }
        println!("{what}: {}", summary(&mut times));
    }
    println!(
        "memory: RSS after load {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
        rss_after_load as f64 / 1024.0,
        status_kib("VmHWM") as f64 / 1024.0
    );
    Ok(())
}

/// What compressing every application alone costs at each level, and what it saves: the
/// figures behind `gzip::LOAD_LEVEL`.
fn compression_levels(snapshot: &snapshot::Pinned) -> Result<(), String> {
    let apps = snapshot.application_count();
    let plain = snapshot.applications(0..apps);
    let pieces: Vec<Vec<&[u8]>> = plain.iter().map(|a| vec![&**a]).collect();
    let plain: usize = pieces.iter().flatten().map(|p| p.len()).sum();
    for level in [1, 3, 6, 9] {
        let started = Instant::now();
        // One thread: the cost in CPU time (the load spreads it over every core).
        let segments = gzip::compress_each(&pieces, level, 1);
        let elapsed = started.elapsed();
        let compressed: usize = segments.iter().map(|s| s.deflate.len()).sum();
        println!(
            "applications compressed alone at level {level}: {:.1} MiB -> {:.2} MiB ({:.1}x) in \
             {:.0} ms",
            plain as f64 / 1048576.0,
            compressed as f64 / 1048576.0,
            plain as f64 / compressed as f64,
            elapsed.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// Parses a GET for `path` and answers it as the event loop does; returns time and body size.
fn timed(catalog: &Snapshots, path: &str) -> Result<(Duration, usize), String> {
    timed_with(catalog, path, "")
}

fn summary(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.3} ms, median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(at(0.0)),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}
