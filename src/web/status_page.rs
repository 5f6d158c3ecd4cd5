//! The status page at `/` (for users allowed `admin`): one server-rendered HTML page, no
//! script, with its plots drawn as inline SVG: bytes per tier over the kept window, the
//! ingest rate over the last hour and day, the queues; then the tiers, copies, queues,
//! Storage Commitment requests, the workers' windows, the last run of every job and the
//! nodes. It refreshes itself every minute.

use std::fmt::Write as _;

use crate::model::markup::escape;
use crate::model::schedule::iso8601;
use crate::service::site::{Line, Overview};

/// Width and height of a plot, in SVG units (the page scales it).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 24.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// The page.
pub fn render(overview: &Overview) -> String {
    let h = &overview.history;
    let mut page = String::with_capacity(32 * 1024);
    page.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"60\">",
        "<title>Strata status</title><style>",
        "body{font-family:sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}",
        "section.plot{display:inline-block;vertical-align:top;margin:0 1em 1em 0}",
        "svg{width:640px;max-width:95vw;height:auto;border:1px solid #ddd}",
        ".legend span{margin-right:1em}",
        "</style></head><body>\n"
    ));
    let _ = writeln!(
        page,
        "<h1>Strata status</h1><p>Node <b>{}</b>, {} UTC. Strata {}.</p>",
        escape(&overview.node),
        escape(&iso8601(h.now)),
        env!("CARGO_PKG_VERSION")
    );
    page.push_str("<h2>History</h2>\n");
    // The kept window, or as much of it as there are samples for.
    let first = |lines: &[Line]| {
        lines
            .iter()
            .filter_map(|l| l.points.first().map(|p| p.0))
            .min()
            .map_or(h.since, |t| t.max(h.since))
    };
    plot(
        &mut page,
        "tier-bytes",
        "Bytes per tier",
        &h.tier_bytes,
        first(&h.tier_bytes),
        h.now,
        bytes,
    );
    plot(
        &mut page,
        "ingest-hour",
        "Instances ingested per minute, last hour",
        std::slice::from_ref(&h.ingest_hour),
        h.now - 3_600_000,
        h.now,
        count,
    );
    plot(
        &mut page,
        "ingest-day",
        "Instances ingested per minute, last day",
        std::slice::from_ref(&h.ingest_day),
        h.now - 86_400_000,
        h.now,
        count,
    );
    plot(
        &mut page,
        "queues",
        "Queues: studies for backup, instances for repair",
        &h.queues,
        first(&h.queues),
        h.now,
        count,
    );
    tables(&mut page, overview);
    page.push_str("</body></html>\n");
    page
}

fn tables(page: &mut String, overview: &Overview) {
    let s = &overview.status;
    page.push_str("<h2>Tiers</h2>\n<table id=\"tiers\"><tr><th>tier</th><th>instances</th><th>bytes</th></tr>");
    for (tier, t) in &s.tiers {
        row(
            page,
            &[tier, &t.instances.to_string(), &bytes(t.bytes as f64)],
        );
    }
    page.push_str("</table>\n<table id=\"totals\"><tr><th>patients</th><th>studies</th><th>series</th><th>instances</th><th>backup copies</th></tr>");
    let copies: Vec<String> = s.copies.iter().map(|(k, n)| format!("{n} {k}")).collect();
    row(
        page,
        &[
            &s.patients.to_string(),
            &s.studies.to_string(),
            &s.series.to_string(),
            &s.instances.to_string(),
            &copies.join(", "),
        ],
    );
    let c = &s.commitments;
    page.push_str(
        "</table>\n<h2>Queues</h2>\n<table id=\"queues\"><tr><th>queue</th><th>waiting</th></tr>",
    );
    row(
        page,
        &["studies for a near-line copy", &s.queues.backup.to_string()],
    );
    row(
        page,
        &["primaries to re-create", &s.queues.repairs.to_string()],
    );
    row(
        page,
        &["commitments being checked", &c.checking.to_string()],
    );
    row(
        page,
        &["commitment reports to deliver", &c.ready.to_string()],
    );
    row(
        page,
        &["commitment reports given up", &c.given_up.to_string()],
    );
    row(
        page,
        &[
            "reads served from a backup copy (ever)",
            &s.read_fallbacks.to_string(),
        ],
    );
    page.push_str("</table>\n");
    schedules(page, overview);
    page.push_str("<h2>Last runs</h2>\n<table id=\"runs\"><tr><th>job</th><th>outcome</th><th>started (UTC)</th><th>seconds</th><th>node</th><th>by</th></tr>");
    for (job, run) in &s.last_runs {
        match run {
            Some(r) => row(
                page,
                &[
                    job,
                    &r.outcome,
                    &r.started_at,
                    &r.seconds.map_or(String::new(), |s| format!("{s:.1}")),
                    &r.node,
                    &r.trigger,
                ],
            ),
            None => row(page, &[job, "never ran", "", "", "", ""]),
        }
    }
    page.push_str("</table>\n<h2>Nodes</h2>\n<table id=\"nodes\"><tr><th>node</th><th>role</th><th>host</th><th>pid</th><th>state</th><th>since (UTC)</th><th>lease until (UTC)</th><th>claims</th></tr>");
    for n in &s.nodes {
        row(
            page,
            &[
                &n.node,
                &n.role,
                &n.host,
                &n.pid.to_string(),
                if n.live { "live" } else { "expired" },
                &n.started_at,
                &n.expires_at,
                &n.claims.to_string(),
            ],
        );
    }
    page.push_str("</table>\n");
}

fn schedules(page: &mut String, overview: &Overview) {
    let sc = &overview.schedule;
    page.push_str("<h2>Schedules</h2>\n<table id=\"schedules\"><tr><th>worker</th><th>window (UTC)</th><th>now</th><th>next opens</th><th>next closes</th><th>throttle MB/s</th><th>would take on</th></tr>");
    let t = &sc.tiering;
    let b = &sc.backup;
    let worker = |page: &mut String,
                  name: &str,
                  window: &Option<String>,
                  open: bool,
                  next_open: &Option<String>,
                  next_close: &Option<String>,
                  throttle: Option<f64>,
                  queued: String| {
        row(
            page,
            &[
                name,
                window.as_deref().unwrap_or("none: by hand"),
                if window.is_none() {
                    ""
                } else if open {
                    "open"
                } else {
                    "closed"
                },
                next_open.as_deref().unwrap_or(""),
                next_close.as_deref().unwrap_or(""),
                &throttle.map_or(String::new(), |t| {
                    if t > 0.0 {
                        t.to_string()
                    } else {
                        "unlimited".into()
                    }
                }),
                &queued,
            ],
        )
    };
    worker(
        page,
        "tiering",
        &t.window,
        t.open_now,
        &t.next_open,
        &t.next_close,
        t.throttle_mb_s,
        format!(
            "{} studies due ({} instances, {}), older than {} days",
            t.queued.due.studies,
            t.queued.due.instances,
            bytes(t.queued.due.bytes as f64),
            t.queued.min_age_days
        ),
    );
    worker(
        page,
        "backup",
        &b.window,
        b.open_now,
        &b.next_open,
        &b.next_close,
        b.throttle_mb_s,
        format!("{} studies", b.queued.backup),
    );
    row(
        page,
        &[
            "repair",
            &format!("every {} s, whatever the window", sc.repair.poll_secs),
            "",
            "",
            "",
            "",
            &format!("{} primaries", sc.repair.queued),
        ],
    );
    let r = &sc.retention;
    worker(
        page,
        "retention",
        &r.window,
        r.open_now,
        &r.next_open,
        &r.next_close,
        None,
        format!("{} studies past retention", r.queued.studies),
    );
    page.push_str("</table>\n");
}

/// One table row of escaped cells; cells that are numbers are right-aligned.
fn row(page: &mut String, cells: &[&str]) {
    page.push_str("<tr>");
    for cell in cells {
        let numeric = !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit() || c == '.');
        let _ = write!(
            page,
            "<td{}>{}</td>",
            if numeric { " class=\"n\"" } else { "" },
            escape(cell)
        );
    }
    page.push_str("</tr>\n");
}

/// A line plot of `lines` from `from` to `to` (Unix milliseconds), 0 at the bottom; the
/// `data-points` attribute of each line counts its points. Without any point it says so.
fn plot(
    page: &mut String,
    id: &str,
    title: &str,
    lines: &[Line],
    from: i64,
    to: i64,
    label: fn(f64) -> String,
) {
    let _ = write!(
        page,
        "<section class=\"plot\" id=\"{id}\"><h3>{}</h3>",
        escape(title)
    );
    let points: usize = lines.iter().map(|l| l.points.len()).sum();
    if points == 0 {
        page.push_str("<p class=\"empty\">No samples yet.</p></section>\n");
        return;
    }
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let span = (to - from).max(1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - 10.0, HEIGHT - BOTTOM - 10.0);
    let x = |t: i64| LEFT + (t - from) as f64 / span * plot_w;
    let y = |v: f64| 10.0 + plot_h - v / top * plot_h;
    let _ = write!(
        page,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"10\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{lx}\" y=\"16\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
         <text x=\"{lx}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{ty}\" font-size=\"11\">{start}</text>\
         <text x=\"{r}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{end}</text>",
        b = 10.0 + plot_h,
        r = LEFT + plot_w,
        lx = LEFT - 4.0,
        ty = HEIGHT - 6.0,
        max = escape(&label(top)),
        start = escape(&iso8601(from)),
        end = escape(&iso8601(to)),
    );
    for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let coordinates: Vec<String> = line
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t.clamp(from, to)), y(v)))
            .collect();
        let _ = write!(
            page,
            "<polyline class=\"series\" data-name=\"{}\" data-points=\"{}\" fill=\"none\" \
             stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            escape(&line.name),
            line.points.len(),
            coordinates.join(" ")
        );
        // A lone point shows as a dot.
        if let [(t, v)] = line.points[..] {
            let _ = write!(
                page,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                x(t.clamp(from, to)),
                y(v)
            );
        }
    }
    page.push_str("</svg><div class=\"legend\">");
    for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let last = line.points.last().map_or(String::new(), |p| label(p.1));
        let _ = write!(
            page,
            "<span style=\"color:{colour}\">&#9632; {} (now {})</span>",
            escape(&line.name),
            escape(&last)
        );
    }
    page.push_str("</div></section>\n");
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn count(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_site_are_escaped_and_units_read_well() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1_536_000.0), "1.5 MB");
        assert_eq!(count(2.25), "2.2");
        assert_eq!(count(3.0), "3");
    }

    #[test]
    fn a_plot_draws_each_line_with_its_points_and_says_when_it_has_none() {
        let mut page = String::new();
        let line = Line {
            name: "online".into(),
            points: vec![(0, 0.0), (50, 5.0), (100, 10.0)],
        };
        plot(&mut page, "p", "Bytes", &[line], 0, 100, bytes);
        assert!(page.contains("data-points=\"3\""), "{page}");
        // The last point is at the right edge, at 10/11 of the height.
        assert!(page.contains(" 630.0,23.3\""), "{page}");
        let mut empty = String::new();
        plot(&mut empty, "q", "Queues", &[], 0, 100, count);
        assert!(empty.contains("No samples yet."));
        assert!(!empty.contains("<svg"));
    }
}
