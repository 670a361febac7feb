//! `dice`: a shell with `roll NdM` and `flip`.
//!
//! The number of sides used when `roll` gets a bare count (`roll 3`) comes from config key
//! `sides` (default 6).

use cannon_guest::{config, Args, Cmd, CmdError, Message, Shell};

struct Dice;

impl Shell for Dice {
    const COMMANDS: &'static [Cmd] = &[
        Cmd {
            name: "roll",
            summary: "roll dice, e.g. roll 2d6",
            usage: "roll NdM [--sum]   (N dice of M sides; N up to 100, M up to 1000)",
            options: &[],
            flags: &["sum"],
            run: roll,
        },
        Cmd {
            name: "flip",
            summary: "flip a coin",
            usage: "flip",
            options: &[],
            flags: &[],
            run: flip,
        },
    ];
}

fn roll(args: &Args, _msg: &Message) -> Result<String, CmdError> {
    let spec = args.get(0).unwrap_or("1");
    let default_sides: u32 = config::parse_or("sides", 6).map_err(CmdError::fail)?;
    let (count, sides) = parse_spec(spec, default_sides)?;
    let rolls: Vec<u32> = (0..count).map(|_| 1 + random_below(sides)).collect();
    let listed = rolls
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    if args.flag("sum") || count > 1 {
        let total: u32 = rolls.iter().sum();
        Ok(format!("{listed} (total {total})"))
    } else {
        Ok(listed)
    }
}

/// `NdM`, `dM` or `N` (with the configured sides).
fn parse_spec(spec: &str, default_sides: u32) -> Result<(u32, u32), CmdError> {
    let bad = || CmdError::usage(format!("cannot read {spec:?} as dice"));
    let (count, sides) = match spec.split_once(['d', 'D']) {
        Some((n, m)) => {
            let n = if n.is_empty() { 1 } else { n.parse().map_err(|_| bad())? };
            (n, m.parse().map_err(|_| bad())?)
        }
        None => (spec.parse().map_err(|_| bad())?, default_sides),
    };
    if !(1..=100).contains(&count) || !(2..=1000).contains(&sides) {
        return Err(CmdError::usage("between 1 and 100 dice of 2 to 1000 sides"));
    }
    Ok((count, sides))
}

fn flip(_args: &Args, _msg: &Message) -> Result<String, CmdError> {
    Ok(if random_below(2) == 0 { "heads" } else { "tails" }.to_owned())
}

/// Uniform in `0..n`, from WASI's random source (through std's hasher seed).
fn random_below(n: u32) -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(n);
    (hasher.finish() % u64::from(n)) as u32
}

cannon_guest::export_shell!(Dice);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("2d6", 6), Ok((2, 6)));
        assert_eq!(parse_spec("d20", 6), Ok((1, 20)));
        assert_eq!(parse_spec("3", 8), Ok((3, 8)));
        assert!(parse_spec("0d6", 6).is_err());
        assert!(parse_spec("2x6", 6).is_err());
        assert!(parse_spec("2d1", 6).is_err());
    }
}
