//! `weather` (example shell): `weather CITY` asks a JSON weather API and answers in one
//! line, e.g. `Paris: 18.5 °C, light rain, wind 12 km/h`.
//!
//! conf: `api`, the API's base URL (the compose file grants exactly that host with
//! `allow: [{http: [...]}]`). secret: `WEATHER_TOKEN`, sent as a bearer token; it comes
//! from the environment through `secrets:` and is masked in anything this shell outputs.
//! The API answers `GET {api}/weather?city=CITY` with
//! `{"city": "...", "temp_c": 18.5, "wind_kmh": 12, "conditions": "light rain"}`.

use cannon_guest::{config, http, Args, Cmd, CmdError, Message, Shell};
use serde_json::Value;

struct Weather;

impl Shell for Weather {
    const COMMANDS: &'static [Cmd] = &[Cmd {
        name: "weather",
        summary: "the weather now in a city",
        usage: "weather CITY   (e.g. weather Paris, weather New York)",
        options: &[],
        flags: &[],
        run: weather,
    }];
}

fn weather(args: &Args, _msg: &Message) -> Result<String, CmdError> {
    let city = args.rest(0);
    if city.trim().is_empty() {
        return Err(CmdError::Usage("which city?".into()));
    }
    let api = config::get("api").ok_or_else(|| CmdError::Fail("conf `api` is not set".into()))?;
    let token = config::get("WEATHER_TOKEN").ok_or_else(|| CmdError::Fail("secret WEATHER_TOKEN is not set".into()))?;
    let url = format!("{}/weather?city={}", api.trim_end_matches('/'), encode(&city));
    let response = http::Request::get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()
        .map_err(CmdError::Fail)?;
    match response.status {
        200 => {}
        401 | 403 => return Err(CmdError::Fail("the weather API refused the token".into())),
        404 => return Ok(format!("no weather known for {city}")),
        other => return Err(CmdError::Fail(format!("the weather API answered {other}"))),
    }
    let text = response.text().map_err(CmdError::Fail)?;
    format_report(text).map_err(CmdError::Fail)
}

/// `Paris: 18.5 °C, light rain, wind 12 km/h` from the API's JSON.
fn format_report(json: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("the weather API sent bad JSON: {e}"))?;
    let city = v["city"].as_str().ok_or("the weather API sent no city")?;
    let temp = v["temp_c"].as_f64().ok_or("the weather API sent no temp_c")?;
    let mut parts = vec![format!("{temp:.1} °C")];
    if let Some(conditions) = v["conditions"].as_str() {
        parts.push(conditions.to_owned());
    }
    if let Some(wind) = v["wind_kmh"].as_f64() {
        parts.push(format!("wind {wind:.0} km/h"));
    }
    Ok(format!("{city}: {}", parts.join(", ")))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

cannon_guest::export_shell!(Weather);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_urls() {
        let json = r#"{"city":"Paris","temp_c":18.46,"wind_kmh":12,"conditions":"light rain"}"#;
        assert_eq!(format_report(json).unwrap(), "Paris: 18.5 °C, light rain, wind 12 km/h");
        assert!(format_report("{}").unwrap_err().contains("no city"));
        assert_eq!(encode("New York&x=1"), "New%20York%26x%3D1");
    }
}
