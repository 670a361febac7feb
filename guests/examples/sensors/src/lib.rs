//! `sensors` (example task): a make-believe room sensor. Each `tick` message (from a `tick`
//! collector) becomes one reading, computed from the tick's time of day, so the same tick
//! always gives the same reading: `temp_c` (a daily swing of ±3 °C around 21 °C plus a
//! 5-minute wobble) and `humidity_pct`, both with one decimal. The readings land in the
//! service's taskback stream, where the `room` shell reads them (`examples/roombot`).
//!
//! conf: `room` (optional), copied into each reading.

use std::f64::consts::TAU;

use cannon_guest::{config, Fields, Message, Task};

struct Sensors;

/// Seconds since midnight UTC of an RFC 3339 UTC time (`2026-11-30T16:52:00Z` or
/// `...:00.250Z`).
fn second_of_day(time: &str) -> Result<f64, String> {
    let bad = || format!("tick {time:?} is not an RFC 3339 UTC time");
    let (_, clock) = time.split_once('T').ok_or_else(bad)?;
    let clock = clock.strip_suffix('Z').ok_or_else(bad)?;
    let mut parts = clock.splitn(3, ':');
    let mut next = || parts.next().ok_or_else(bad);
    let hours: u32 = next()?.parse().map_err(|_| bad())?;
    let minutes: u32 = next()?.parse().map_err(|_| bad())?;
    let seconds: f64 = next()?.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 || !(0.0..61.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(f64::from(hours * 3600 + minutes * 60) + seconds)
}

/// `(temp_c, humidity_pct)` at second `s` of the day, each rounded to one decimal.
pub fn reading(s: f64) -> (f64, f64) {
    let day = TAU * s / 86_400.0;
    let temp = 21.0 + 3.0 * day.sin() + 0.8 * (TAU * s / 300.0).sin();
    let humidity = 45.0 + 8.0 * day.cos() + 2.0 * (TAU * s / 420.0).sin();
    (
        (temp * 10.0).round() / 10.0,
        (humidity * 10.0).round() / 10.0,
    )
}

impl Task for Sensors {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let tick = msg
            .get("tick")
            .ok_or("message has no `tick` field (use a tick collector)")?;
        let (temp, humidity) = reading(second_of_day(tick)?);
        let mut out = vec![
            ("temp_c".to_owned(), format!("{temp:.1}")),
            ("humidity_pct".to_owned(), format!("{humidity:.1}")),
        ];
        if let Some(room) = config::get("room") {
            out.push(("room".to_owned(), room));
        }
        Ok(out)
    }
}

cannon_guest::export_task!(Sensors);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_follow_the_time_of_day() {
        assert_eq!(second_of_day("2026-11-30T16:52:00Z"), Ok(60_720.0));
        assert_eq!(second_of_day("2026-11-30T00:00:01.500Z"), Ok(1.5));
        assert!(second_of_day("2026-11-30 16:52:00").is_err());
        assert!(second_of_day("2026-11-30T25:00:00Z").is_err());
        assert_eq!(reading(0.0), (21.0, 53.0));
        // Six hours in: the daily swing at its top, the wobble back at zero.
        assert_eq!(reading(21_600.0).0, 24.0);
        assert_eq!(reading(60_720.0), reading(60_720.0));
    }
}
