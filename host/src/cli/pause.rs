//! `apiary pause [--for 1h]` and `apiary resume`: the governor of a running node by
//! hand (`POST /v1/node/pause`, `POST /v1/node/resume`). A pause holds over the rules
//! until it runs out or the node is resumed; resuming hands the decision back to the
//! rules, which may still keep the node paused (on battery, a busy machine).

use super::status::governor_line;
use super::{CliError, Context, NodeArgs, human_ms};
use clap::Args;
use reqwest::Method;
use serde_json::json;
use std::process::ExitCode;

#[derive(Args)]
pub struct PauseCommand {
    #[command(flatten)]
    node: NodeArgs,
    /// For how long: `90s`, `30m`, `1h`, `1h30m`, `2d`. Default: until `apiary resume`.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration_ms)]
    for_ms: Option<u64>,
}

#[derive(Args)]
pub struct ResumeCommand {
    #[command(flatten)]
    node: NodeArgs,
}

impl PauseCommand {
    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        let status = self.node.call(
            ctx.config,
            Method::POST,
            "/v1/node/pause",
            Some(json!({ "for_ms": self.for_ms })),
        )?;
        println!("{}", governor_line(&status));
        if let Some(ms) = self.for_ms
            && status["paused_until_ms"].is_null()
        {
            println!("(asked for {})", human_ms(ms));
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl ResumeCommand {
    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        let status =
            self.node
                .call(ctx.config, Method::POST, "/v1/node/resume", Some(json!({})))?;
        println!("{}", governor_line(&status));
        Ok(ExitCode::SUCCESS)
    }
}

/// `90s`, `30m`, `1h`, `2d`, `500ms` and sums of them (`1h30m`), in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a duration: write a number and a unit, e.g. 90s, 30m, 1h or 1h30m")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(ms_per)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if total == 0 {
        return Err(format!(
            "{text:?} is no time at all; to pause until resumed, leave out --for"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms as d;

    #[test]
    fn durations() {
        assert_eq!(d("90s"), Ok(90_000));
        assert_eq!(d("30m"), Ok(1_800_000));
        assert_eq!(d("1h"), Ok(3_600_000));
        assert_eq!(d("1h30m"), Ok(5_400_000));
        assert_eq!(d("2d"), Ok(172_800_000));
        assert_eq!(d("250ms"), Ok(250));
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "1h30",
            "-1h",
            "0s",
            "99999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?} parsed");
        }
    }
}
