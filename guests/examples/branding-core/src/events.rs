//! The event calendar: one folder per event, each with an `event.conf` and its assets.
//!
//! ```text
//! # events/halloween/event.conf
//! name: Halloween
//! start: 15-10            # day-month, any year
//! end: 02-11              # may wrap around the new year (e.g. 20-12 to 06-01)
//! description: Spooky season
//! banner: banner.txt      # relative to the event's folder
//! icons: icons/pumpkin.txt, icons/bat.txt
//! ```
//! One event is the fallback (`fallback: yes`, no dates): it applies when no other does.

use std::fmt;
use std::path::Path;

use example_shared::time;

/// The name of each event's description file.
pub const CONF: &str = "event.conf";

/// A day of the year without a year: `15-10` is 15 October.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DayMonth {
    // Field order gives the calendar order.
    pub month: u32,
    pub day: u32,
}

impl DayMonth {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a day-month such as 15-10 (15 October)");
        let (d, m) = text.trim().split_once('-').ok_or_else(bad)?;
        let (day, month): (u32, u32) = (d.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&month) || day == 0 || day > time::days_in_month(month) {
            return Err(bad());
        }
        Ok(DayMonth { month, day })
    }

    /// The UTC date at `t`.
    pub fn of(t: u64) -> Self {
        let (_, month, day) = time::date(t);
        DayMonth { month, day }
    }

    /// Day of a leap year, 0..366.
    fn ordinal(self) -> u32 {
        (1..self.month).map(time::days_in_month).sum::<u32>() + self.day - 1
    }
}

impl fmt::Display for DayMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02}", self.day, self.month)
    }
}

/// One event of the calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its folder's name: the stable id kept in the daemon's state.
    pub id: String,
    pub name: String,
    pub description: String,
    /// `None` for the fallback.
    pub dates: Option<(DayMonth, DayMonth)>,
    /// Asset paths relative to the events directory (`halloween/banner.txt`).
    pub banner: String,
    pub icons: Vec<String>,
}

impl Event {
    pub fn is_fallback(&self) -> bool {
        self.dates.is_none()
    }

    /// Whether `day` falls between start and end, both included (wrapping at new year).
    pub fn covers(&self, day: DayMonth) -> bool {
        match self.dates {
            None => false,
            Some((start, end)) if start <= end => start <= day && day <= end,
            Some((start, end)) => day >= start || day <= end,
        }
    }

    /// How many days the event lasts (in a leap year); the fallback lasts all year.
    pub fn span(&self) -> u32 {
        match self.dates {
            None => 366,
            Some((start, end)) => (end.ordinal() + 366 - start.ordinal()) % 366 + 1,
        }
    }

    /// `15-10 to 02-11`, or `fallback`.
    pub fn when(&self) -> String {
        match self.dates {
            Some((start, end)) => format!("{start} to {end}"),
            None => "fallback".to_owned(),
        }
    }

    /// Reads `dir/event.conf`; `id` is the folder's name. Assets must exist.
    pub fn load(root: &Path, id: &str) -> Result<Self, String> {
        let path = root.join(id).join(CONF);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{id}/{CONF}: {e}"))?;
        let event = Self::parse(id, &text).map_err(|e| format!("{id}/{CONF}: {e}"))?;
        for asset in std::iter::once(&event.banner).chain(&event.icons) {
            if !root.join(asset).is_file() {
                return Err(format!("{id}/{CONF}: asset {asset} is not a file"));
            }
        }
        Ok(event)
    }

    /// Parses an `event.conf` (see the module docs); errors name the line.
    pub fn parse(id: &str, text: &str) -> Result<Self, String> {
        let (mut name, mut description, mut start, mut end) = (None, String::new(), None, None);
        let (mut banner, mut icons, mut fallback) = (None, Vec::new(), false);
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split_once(" #").map_or(raw, |(a, _)| a).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let (key, value) = line.split_once(':').ok_or_else(|| at(format!("{line:?} is not `key: value`")))?;
            let value = value.trim();
            let asset = |v: &str| -> Result<String, String> {
                if v.is_empty() || v.starts_with('/') || v.split('/').any(|p| p == "..") {
                    return Err(format!("asset {v:?} must be a path inside the event's folder"));
                }
                Ok(format!("{id}/{v}"))
            };
            match key.trim() {
                "name" => name = Some(value.to_owned()),
                "description" => description = value.to_owned(),
                "start" => start = Some(DayMonth::parse(value).map_err(at)?),
                "end" => end = Some(DayMonth::parse(value).map_err(at)?),
                "banner" => banner = Some(asset(value).map_err(at)?),
                "icons" => {
                    icons = value.split(',').map(|v| asset(v.trim())).collect::<Result<_, _>>().map_err(at)?;
                }
                "fallback" => {
                    fallback = match value {
                        "yes" | "true" => true,
                        "no" | "false" => false,
                        other => return Err(at(format!("fallback is yes or no, not {other:?}"))),
                    }
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (expected name, start, end, description, banner, icons, fallback)"
                    )))
                }
            }
        }
        let dates = match (start, end, fallback) {
            (Some(s), Some(e), false) => Some((s, e)),
            (None, None, true) => None,
            (_, _, true) => return Err("the fallback event has no start or end".to_owned()),
            _ => return Err("an event needs `start:` and `end:` (or `fallback: yes`)".to_owned()),
        };
        Ok(Event {
            id: id.to_owned(),
            name: name.unwrap_or_else(|| id.to_owned()),
            description,
            dates,
            banner: banner.ok_or("an event needs `banner:`")?,
            icons: if icons.is_empty() {
                return Err("an event needs `icons:` (one or more)".to_owned());
            } else {
                icons
            },
        })
    }
}

/// Every event of a directory, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// Sorted by start date; the fallback last.
    pub events: Vec<Event>,
    /// One line per folder that was skipped, naming the file and the reason.
    pub problems: Vec<String>,
}

impl Calendar {
    /// Reads every folder of `root` that has an `event.conf`. A bad event is skipped
    /// and reported in `problems`; so is a second fallback.
    pub fn load(root: &Path) -> Result<Self, String> {
        let entries = std::fs::read_dir(root).map_err(|e| format!("cannot read the events directory: {e}"))?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(CONF).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        let mut calendar = Calendar::default();
        for id in ids {
            match Event::load(root, &id) {
                Ok(event) if event.is_fallback() && calendar.fallback().is_some() => {
                    calendar.problems.push(format!("{id}/{CONF}: a second fallback event (ignored)"));
                }
                Ok(event) => calendar.events.push(event),
                Err(problem) => calendar.problems.push(problem),
            }
        }
        calendar.events.sort_by_key(|e| (e.is_fallback(), e.dates.map(|d| d.0), e.id.clone()));
        Ok(calendar)
    }

    pub fn fallback(&self) -> Option<&Event> {
        self.events.iter().find(|e| e.is_fallback())
    }

    /// The event of `day`: among those covering it the shortest (the most specific),
    /// then by id; the fallback when none does.
    pub fn active(&self, day: DayMonth) -> Option<&Event> {
        self.events
            .iter()
            .filter(|e| e.covers(day))
            .min_by_key(|e| (e.span(), e.id.clone()))
            .or_else(|| self.fallback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dm(text: &str) -> DayMonth {
        DayMonth::parse(text).unwrap()
    }

    fn event(id: &str, conf: &str) -> Event {
        Event::parse(id, conf).unwrap()
    }

    #[test]
    fn day_months() {
        assert_eq!(dm("15-10"), DayMonth { month: 10, day: 15 });
        assert_eq!(dm("29-02").to_string(), "29-02");
        for bad in ["31-04", "0-1", "1-13", "15/10", "x-1"] {
            assert!(DayMonth::parse(bad).is_err(), "{bad}");
        }
        // 2024-05-17
        assert_eq!(DayMonth::of(1_715_936_400), dm("17-05"));
    }

    #[test]
    fn conf_files() {
        let e = event(
            "halloween",
            "# spooky\nname: Halloween\nstart: 15-10\nend: 02-11  # incl.\ndescription: Boo: yes\n\
             banner: banner.txt\nicons: icons/a.txt, icons/b.txt\n",
        );
        assert_eq!(e.name, "Halloween");
        assert_eq!(e.description, "Boo: yes");
        assert_eq!(e.banner, "halloween/banner.txt");
        assert_eq!(e.icons, ["halloween/icons/a.txt", "halloween/icons/b.txt"]);
        assert_eq!(e.when(), "15-10 to 02-11");
        assert_eq!(e.span(), 19);
        let f = event("default", "fallback: yes\nbanner: b\nicons: i");
        assert!(f.is_fallback());
        let refused = |conf: &str, needle: &str| {
            let err = Event::parse("x", conf).expect_err(conf);
            assert!(err.contains(needle), "{conf}: {err}");
        };
        refused("start: 01-01\nbanner: b\nicons: i", "needs `start:` and `end:`");
        refused("start: 01-01\nend: 02-01\nicons: i", "needs `banner:`");
        refused("start: 01-01\nend: 02-01\nbanner: b", "needs `icons:`");
        refused("start: 01-01\nend: 02-01\nbanner: ../b\nicons: i", "line 3: asset");
        refused("colour: red", "line 1: unknown key");
        refused("fallback: yes\nstart: 01-01\nbanner: b\nicons: i", "fallback event has no start");
        refused("start: 32-01", "line 1");
    }

    #[test]
    fn the_shortest_covering_event_wins_and_wraps_work() {
        let calendar = Calendar {
            events: vec![
                event("winter", "start: 01-12\nend: 29-02\nbanner: b\nicons: i"),
                event("newyear", "start: 30-12\nend: 02-01\nbanner: b\nicons: i"),
                event("default", "fallback: yes\nbanner: b\nicons: i"),
            ],
            problems: Vec::new(),
        };
        let active = |d: &str| calendar.active(dm(d)).map(|e| e.id.as_str());
        assert_eq!(active("15-12"), Some("winter"));
        assert_eq!(active("31-12"), Some("newyear"));
        assert_eq!(active("01-01"), Some("newyear"));
        assert_eq!(active("03-01"), Some("winter"));
        assert_eq!(active("29-02"), Some("winter"));
        assert_eq!(active("01-03"), Some("default"));
        assert_eq!(Calendar::default().active(dm("01-03")), None);
    }

    #[test]
    fn the_example_calendar_loads_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../examples/branding/events");
        let calendar = Calendar::load(&root).unwrap();
        assert!(calendar.problems.is_empty(), "{:?}", calendar.problems);
        assert!(calendar.events.len() >= 4, "{:?}", calendar.events);
        assert!(calendar.fallback().is_some());
        assert!(calendar.events.last().is_some_and(Event::is_fallback));
        // Every day of the year has an event (the fallback at least).
        for month in 1..=12 {
            for day in 1..=time::days_in_month(month) {
                assert!(calendar.active(DayMonth { month, day }).is_some());
            }
        }
    }
}
