//! Unit-conversion specialist: length, mass, volume, time, speed, data and temperature.
//!
//! "Convert 5 miles to km", "How many feet are in 3 meters?", "100 F in Celsius". As a
//! judge it recomputes the conversion and prefers the candidate whose final number agrees
//! to within rounding (0.5 %).

use apiary_plugin_api::{
    Answer, Manifest, PluginError, Request, Specialist, Verdict, export_specialist, text,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Length,
    Mass,
    Volume,
    Time,
    Speed,
    Data,
    Temperature,
}

/// A unit: value in SI = value × factor + offset.
#[derive(Debug)]
pub struct Unit {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub dimension: Dimension,
    pub factor: f64,
    pub offset: f64,
}

const fn u(
    name: &'static str,
    aliases: &'static [&'static str],
    dimension: Dimension,
    factor: f64,
) -> Unit {
    Unit {
        name,
        aliases,
        dimension,
        factor,
        offset: 0.0,
    }
}

use Dimension::*;

pub static UNITS: &[Unit] = &[
    u(
        "millimeters",
        &["mm", "millimeter", "millimetre", "millimetres"],
        Length,
        0.001,
    ),
    u(
        "centimeters",
        &["cm", "centimeter", "centimetre", "centimetres"],
        Length,
        0.01,
    ),
    u("meters", &["m", "meter", "metre", "metres"], Length, 1.0),
    u(
        "kilometers",
        &["km", "kilometer", "kilometre", "kilometres", "kms"],
        Length,
        1000.0,
    ),
    u("inches", &["in", "inch"], Length, 0.0254),
    u("feet", &["ft", "foot"], Length, 0.3048),
    u("yards", &["yd", "yard", "yds"], Length, 0.9144),
    u("miles", &["mi", "mile"], Length, 1609.344),
    u("nautical miles", &["nautical mile", "nmi"], Length, 1852.0),
    u("milligrams", &["mg", "milligram"], Mass, 1e-6),
    u("grams", &["g", "gram", "gramme", "grammes"], Mass, 0.001),
    u(
        "kilograms",
        &["kg", "kilogram", "kilo", "kilos", "kgs"],
        Mass,
        1.0,
    ),
    u(
        "tonnes",
        &["tonne", "metric ton", "metric tons", "t"],
        Mass,
        1000.0,
    ),
    u("ounces", &["oz", "ounce"], Mass, 0.028_349_523_125),
    u("pounds", &["lb", "lbs", "pound"], Mass, 0.453_592_37),
    u("stones", &["stone", "st"], Mass, 6.350_293_18),
    u(
        "milliliters",
        &["ml", "milliliter", "millilitre", "millilitres"],
        Volume,
        1e-6,
    ),
    u("liters", &["l", "liter", "litre", "litres"], Volume, 0.001),
    u(
        "cubic meters",
        &["cubic meter", "cubic metre", "cubic metres", "m3"],
        Volume,
        1.0,
    ),
    u(
        "teaspoons",
        &["tsp", "teaspoon"],
        Volume,
        4.928_921_593_75e-6,
    ),
    u(
        "tablespoons",
        &["tbsp", "tablespoon"],
        Volume,
        1.478_676_478_125e-5,
    ),
    u(
        "fluid ounces",
        &["fl oz", "fluid ounce"],
        Volume,
        2.957_352_956_25e-5,
    ),
    u("cups", &["cup"], Volume, 2.365_882_365e-4),
    u("pints", &["pint", "pt"], Volume, 4.731_764_73e-4),
    u("quarts", &["quart", "qt"], Volume, 9.463_529_46e-4),
    u("gallons", &["gallon", "gal"], Volume, 3.785_411_784e-3),
    u("milliseconds", &["ms", "millisecond"], Time, 0.001),
    u("seconds", &["s", "sec", "secs", "second"], Time, 1.0),
    u("minutes", &["min", "mins", "minute"], Time, 60.0),
    u("hours", &["h", "hr", "hrs", "hour"], Time, 3600.0),
    u("days", &["day"], Time, 86_400.0),
    u("weeks", &["week", "wk"], Time, 604_800.0),
    u("years", &["year", "yr"], Time, 31_557_600.0),
    u(
        "meters per second",
        &["m/s", "meter per second", "metres per second"],
        Speed,
        1.0,
    ),
    u(
        "kilometers per hour",
        &["km/h", "kph", "kmh", "kilometres per hour"],
        Speed,
        1.0 / 3.6,
    ),
    u("miles per hour", &["mph", "mile per hour"], Speed, 0.447_04),
    u("knots", &["knot", "kn"], Speed, 1852.0 / 3600.0),
    u("bytes", &["byte", "b"], Data, 1.0),
    u("kilobytes", &["kb", "kilobyte"], Data, 1e3),
    u("megabytes", &["mb", "megabyte"], Data, 1e6),
    u("gigabytes", &["gb", "gigabyte"], Data, 1e9),
    u("terabytes", &["tb", "terabyte"], Data, 1e12),
    u("kibibytes", &["kib", "kibibyte"], Data, 1024.0),
    u("mebibytes", &["mib", "mebibyte"], Data, 1_048_576.0),
    u("gibibytes", &["gib", "gibibyte"], Data, 1_073_741_824.0),
    Unit {
        name: "degrees Celsius",
        aliases: &[
            "celsius",
            "c",
            "degrees c",
            "degree celsius",
            "centigrade",
            "°c",
        ],
        dimension: Temperature,
        factor: 1.0,
        offset: 273.15,
    },
    Unit {
        name: "degrees Fahrenheit",
        aliases: &["fahrenheit", "f", "degrees f", "degree fahrenheit", "°f"],
        dimension: Temperature,
        factor: 5.0 / 9.0,
        offset: 273.15 - 32.0 * 5.0 / 9.0,
    },
    u("kelvin", &["k", "kelvins"], Temperature, 1.0),
];

/// A parsed conversion question.
#[derive(Debug)]
pub struct Conversion {
    pub amount: f64,
    pub from: &'static Unit,
    pub to: &'static Unit,
}

impl Conversion {
    pub fn result(&self) -> f64 {
        let si = self.amount * self.from.factor + self.from.offset;
        (si - self.to.offset) / self.to.factor
    }

    pub fn sentence(&self) -> String {
        format!(
            "{} {} = {} {}",
            fmt(self.amount),
            self.from.name,
            fmt(self.result()),
            self.to.name
        )
    }
}

/// Six significant digits, trailing zeros dropped.
fn fmt(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Mentions of units in word order, longest match at each position.
fn unit_mentions(words: &[String]) -> Vec<(usize, &'static Unit)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut best: Option<(usize, &'static Unit)> = None;
        for unit in UNITS {
            for name in std::iter::once(&unit.name).chain(unit.aliases.iter()) {
                let parts = tokens(&name.to_lowercase());
                let n = parts.len();
                if n > 0
                    && i + n <= words.len()
                    && words[i..i + n] == parts[..]
                    && best.is_none_or(|(len, _)| n > len)
                {
                    best = Some((n, unit));
                }
            }
        }
        match best {
            Some((n, unit)) => {
                out.push((i, unit));
                i += n;
            }
            None => i += 1,
        }
    }
    out
}

/// Lower-case words, keeping decimal points inside numbers ("3.5") but not at word ends.
fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '°'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parse a conversion question: an amount, the unit after it, and a second unit of the
/// same dimension.
pub fn parse(question: &str) -> Result<Conversion, String> {
    // "m/s" and "km/h" survive as one token each before splitting into words.
    let q = question
        .to_lowercase()
        .replace("m/s", " meters per second ")
        .replace("km/h", " kmh ");
    let words = tokens(&q);
    let amounts = text::numbers(&q);
    let amount = amounts.first().copied().ok_or("no amount to convert")?;
    // A conversion states one amount; more numbers mean a word problem about more than it.
    if amounts.len() > 1 {
        return Err("more than one number: not a plain conversion (a word problem?)".into());
    }
    let mentions = unit_mentions(&words);
    // Single letters ("a", "in", "s") are too ambiguous unless they stand right after the number.
    let number_at = words
        .iter()
        .position(|w| text::numbers(w).first() == Some(&amount.abs()));
    let after_number = number_at.and_then(|at| mentions.iter().find(|(i, _)| *i == at + 1));
    // Single letters ("m", "s") and "in" are too ambiguous to count as a unit unless they
    // stand right after the amount or right after "to"/"in"/"into".
    let strong: Vec<_> = mentions
        .iter()
        .filter(|(i, _)| {
            let w = words[*i].as_str();
            let after_number = Some(*i) == number_at.map(|n| n + 1);
            let after_to = *i > 0 && matches!(words[*i - 1].as_str(), "to" | "in" | "into");
            after_number || after_to || (w.len() >= 2 && w != "in" && w != "st")
        })
        .collect();
    let from = after_number
        .map(|(_, u)| *u)
        .ok_or("no unit after the amount")?;
    let to = strong
        .iter()
        .map(|(_, u)| *u)
        .find(|u| !std::ptr::eq(*u, from) && u.dimension == from.dimension)
        .ok_or("no target unit of the same kind")?;
    Ok(Conversion { amount, from, to })
}

#[derive(Default)]
pub struct Units;

impl Specialist for Units {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec!["units".into(), "measurement".into(), "conversion".into()],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        if self.answer(req).is_ok() { 0.9 } else { 0.0 }
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let c = parse(&req.prompt).map_err(|e| PluginError::Unsupported(e.to_string()))?;
        if req.choices.is_empty() {
            return Ok(Answer::new(c.sentence(), 0.97));
        }
        let want = c.result();
        let right = |o: &str| {
            text::numbers(o)
                .iter()
                .any(|&v| (v - want).abs() <= 0.005 * want.abs().max(1e-9))
        };
        Answer::from_options(&req.choices, right, 0.97).ok_or_else(|| {
            PluginError::Unsupported(format!("{} is not among the options", c.sentence()))
        })
    }

    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        let Ok(c) = parse(prompt) else {
            return Verdict::Tie;
        };
        let want = c.result();
        let right = |s: &str| {
            text::numbers(s)
                .iter()
                .any(|&v| (v - want).abs() <= 0.005 * want.abs().max(1e-9))
        };
        match (right(first), right(second)) {
            (true, false) => Verdict::First,
            (false, true) => Verdict::Second,
            _ => Verdict::Tie,
        }
    }
}

export_specialist!(Units);

#[cfg(test)]
mod tests {
    use super::*;

    fn says(q: &str) -> String {
        parse(q)
            .map(|c| c.sentence())
            .unwrap_or_else(|e| format!("<{e}>"))
    }

    #[test]
    fn word_problems_are_not_conversions() {
        assert!(
            parse("A train goes 60 miles in 2 hours. How far in km does it go in 3 hours?")
                .is_err()
        );
        assert!(parse("Convert 26.2 miles to km").is_ok());
    }

    #[test]
    fn conversions() {
        assert_eq!(
            says("Convert 5 miles to km"),
            "5 miles = 8.04672 kilometers"
        );
        assert_eq!(
            says("How many feet are in 3 meters?"),
            "3 meters = 9.84252 feet"
        );
        assert_eq!(
            says("100 F in Celsius"),
            "100 degrees Fahrenheit = 37.7778 degrees Celsius"
        );
        assert_eq!(
            says("What is 0 degrees celsius in fahrenheit?"),
            "0 degrees Celsius = 32 degrees Fahrenheit"
        );
        assert_eq!(says("2 hours in minutes"), "2 hours = 120 minutes");
        assert_eq!(
            says("How many kilograms is 3.5 pounds?"),
            "3.5 pounds = 1.58757 kilograms"
        );
        assert_eq!(
            says("convert 1 GiB to MB"),
            "1 gibibytes = 1073.74 megabytes"
        );
        assert_eq!(
            says("60 mph in km/h"),
            "60 miles per hour = 96.5606 kilometers per hour"
        );
    }

    #[test]
    fn declines_non_conversions() {
        assert!(parse("What is 17 * 23?").is_err());
        assert!(parse("What is the capital of France?").is_err());
        assert!(parse("Convert 5 miles to kg").is_err());
    }

    #[test]
    fn judging() {
        let s = Units;
        let p = "Convert 5 miles to km";
        assert_eq!(s.compare(p, "about 8.05 km", "5 km"), Verdict::First);
        assert_eq!(s.compare(p, "8 km", "8.0467 km"), Verdict::Second);
        assert_eq!(s.compare("what is 2+2", "4", "5"), Verdict::Tie);
    }
}
