//! `roombot` (example shell): answers questions about another service's readings, the way
//! botcannon's roombot did. `room temp --last 1h` reads the `sensors` service's taskback
//! stream through the `streams` import and answers with min/mean/max and a small chart:
//!
//! ```text
//! temp, last 1h: min 18.2 °C, mean 20.9 °C, max 23.4 °C (360 readings)
//! ▁▂▃▄▅▆▇█▇▆▅▄▃▂▁▁▂▃▄▅▆▇█▇
//! 15:52 UTC ... 16:52 UTC
//! ```
//!
//! conf: `sensors` (the service to read, default `sensors`; the compose file must grant it:
//! `allow: [{streams: [sensors]}]`).

use cannon_guest::streams::{self, StreamKind};
use cannon_guest::{config, Args, Cmd, CmdError, Message, Shell};

struct Roombot;

const USAGE: &str = "room temp [--last 1h] | room humidity [--last 30m] | room help";

impl Shell for Roombot {
    const COMMANDS: &'static [Cmd] = &[Cmd {
        name: "room",
        summary: "the room's temperature and humidity: min, mean, max and a chart",
        usage: USAGE,
        options: &["last"],
        flags: &[],
        run: room,
    }];
}

/// Most readings one answer looks at (a week of one reading a minute fits).
const MAX_READINGS: usize = 20_000;
/// Longest window `--last` accepts.
const MAX_WINDOW_S: u64 = 7 * 24 * 3600;
/// Columns of the chart.
const CHART_WIDTH: usize = 24;

/// What a reading measures: its field in the sensors' taskbacks, name and unit.
struct Metric {
    field: &'static str,
    name: &'static str,
    unit: &'static str,
}

const TEMP: Metric = Metric {
    field: "temp_c",
    name: "temp",
    unit: " °C",
};
const HUMIDITY: Metric = Metric {
    field: "humidity_pct",
    name: "humidity",
    unit: " %",
};

fn room(args: &Args, _msg: &Message) -> Result<String, CmdError> {
    let metric = match args.get(0) {
        Some("temp") => TEMP,
        Some("humidity") => HUMIDITY,
        Some("help") | None => return Ok(help()),
        Some(other) => return Err(CmdError::usage(format!("unknown subcommand {other:?}"))),
    };
    let last = args.option("last").unwrap_or("1h");
    let window_s = parse_window(last).map_err(CmdError::usage)?;
    let service = config::get_or("sensors", "sensors");
    let from_ms = streams::now_ms().saturating_sub(window_s * 1000);
    let (entries, more) =
        match streams::since(&service, StreamKind::Taskback, from_ms, MAX_READINGS) {
            Ok(read) => read,
            // The broker is down: fail, so the message is retried.
            Err(streams::Error::Unavailable(why)) => return Err(CmdError::fail(why)),
            // Not granted, no such service: retrying would not help; say so.
            Err(other) => return Ok(format!("cannot read the readings of {service:?}: {other}")),
        };
    let readings: Vec<(u64, f64)> = entries
        .iter()
        .filter_map(|e| {
            let value = e
                .get(metric.field)?
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())?;
            Some((streams::id_ms(&e.id)?, value))
        })
        .collect();
    Ok(answer(&metric, last, &readings, more))
}

fn help() -> String {
    format!(
        "usage: {USAGE}\n\
         temp, humidity: min, mean and max over the window (--last, e.g. 30m, 1h, 2d; default 1h) and a chart"
    )
}

/// `30s`, `15m`, `1h`, `2d`: a window of at most a week.
fn parse_window(text: &str) -> Result<u64, String> {
    let bad =
        || format!("--last {text:?}: expected a number and s, m, h or d (e.g. 1h), at most 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(s) if s > 0 && s <= MAX_WINDOW_S => Ok(s),
        _ => Err(bad()),
    }
}

/// The reply: statistics on the first line, then the chart and its time span.
fn answer(metric: &Metric, last: &str, readings: &[(u64, f64)], more: bool) -> String {
    let (Some(first), Some(newest)) = (readings.first(), readings.last()) else {
        return format!("no {} readings in the last {last}", metric.name);
    };
    let values: Vec<f64> = readings.iter().map(|(_, v)| *v).collect();
    let (min, max, mean) = stats(&values);
    let unit = metric.unit;
    let cut = if more { ", more not read" } else { "" };
    format!(
        "{}, last {last}: min {min:.1}{unit}, mean {mean:.1}{unit}, max {max:.1}{unit} ({} readings{cut})\n{}\n{} UTC ... {} UTC",
        metric.name,
        values.len(),
        sparkline(&values, CHART_WIDTH),
        clock(first.0),
        clock(newest.0),
    )
}

/// `(min, max, mean)` of a non-empty list, summed in order.
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (min, max, mean)
}

/// At most `width` blocks, each the mean of its share of the values, scaled from min to max.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let columns = values.len().min(width).max(1);
    let means: Vec<f64> = (0..columns)
        .map(|c| {
            let (start, end) = (c * values.len() / columns, (c + 1) * values.len() / columns);
            let part = &values[start..end.max(start + 1).min(values.len())];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let (min, max, _) = stats(&means);
    means
        .iter()
        .map(|m| {
            let level = if max > min {
                ((m - min) / (max - min) * 7.0).round() as usize
            } else {
                3
            };
            BLOCKS[level.min(7)]
        })
        .collect()
}

/// `HH:MM` (UTC) of a time in Unix milliseconds.
fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", minutes / 60 % 24, minutes % 60)
}

cannon_guest::export_shell!(Roombot);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(parse_window("1h"), Ok(3600));
        assert_eq!(parse_window("30m"), Ok(1800));
        assert_eq!(parse_window("7d"), Ok(MAX_WINDOW_S));
        for bad in [
            "",
            "h",
            "1",
            "0h",
            "8d",
            "1w",
            "-1h",
            "99999999999999999999h",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_with_stats_and_a_chart() {
        let readings = [(3_600_000, 20.0), (3_660_000, 22.0), (3_720_000, 21.5)];
        let text = answer(&TEMP, "1h", &readings, false);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "temp, last 1h: min 20.0 °C, mean 21.2 °C, max 22.0 °C (3 readings)"
        );
        assert_eq!(text.lines().nth(1), Some("▁█▆"));
        assert_eq!(text.lines().nth(2), Some("01:00 UTC ... 01:02 UTC"));
        assert_eq!(
            answer(&HUMIDITY, "5m", &[], false),
            "no humidity readings in the last 5m"
        );
        assert_eq!(sparkline(&[1.0; 100], 24).chars().count(), 24);
        assert_eq!(sparkline(&[5.0], 24), "▄");
    }
}
