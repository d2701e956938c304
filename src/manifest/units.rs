//! Typed scalar values of manifests: durations ("10s"), sizes ("512Mi"), cron schedules.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a sum of parts: `500ms`, `10s`, `5m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(StdDuration::from_secs(secs))
    }

    /// The standard-library duration.
    pub fn get(self) -> StdDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid duration `{text}`: expected a number and a unit (ms, s, m, h, d), \
                 such as `30s`, `5m` or `1h30m`"
            )
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let number: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let millis = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = total
                .checked_add(number.checked_mul(millis).ok_or_else(bad)?)
                .ok_or_else(bad)?;
        }
        // A hundred years is more than any timer needs and keeps arithmetic safe.
        if total > 100 * 365 * 86_400_000 {
            return Err(format!("duration `{text}` is too long (at most 100 years)"));
        }
        Ok(Duration(StdDuration::from_millis(total as u64)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

/// A size in bytes written as a number with an optional binary unit: `512Mi`, `1G`, `64k`.
///
/// Every multiple is a power of 1024 (`1G` = `1Gi`), as in `docker run --memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid size `{text}`: expected a whole number of bytes or a number with a \
                 unit (Ki, Mi, Gi, Ti), such as `512Mi` or `1Gi`"
            )
        };
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = text[..digits].parse().map_err(|_| bad())?;
        let unit = &text[digits..];
        let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let shift = match unit {
            "" => 0,
            "k" | "K" => 10,
            "m" | "M" => 20,
            "g" | "G" => 30,
            "t" | "T" => 40,
            _ => return Err(bad()),
        };
        // Docker (memory), nginx (client_max_body_size) and Traefik all read a size as a
        // signed 64-bit number: anything past it validates but fails when applied.
        let max = i64::MAX as u64;
        number
            .checked_mul(1 << shift)
            .filter(|bytes| *bytes <= max)
            .map(Size)
            .ok_or_else(|| format!("size `{text}` is too large: at most {}Ti", max >> 40))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if self.0 != 0 && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A cron schedule with five fields (minute hour day-of-month month day-of-week), as in
/// crontab(5), or an alias such as `@daily`. Times are the host's local time.
#[derive(Clone)]
pub struct Cron {
    text: String,
    parsed: std::sync::Arc<croner::Cron>,
}

impl Cron {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> &croner::Cron {
        &self.parsed
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(format!(
                "invalid cron schedule `{text}`: expected 5 fields (minute hour day month \
                 weekday), such as `0 3 * * *`, found {fields}"
            ));
        }
        let parsed = croner::Cron::from_str(text)
            .map_err(|e| format!("invalid cron schedule `{text}`: {e}"))?;
        // `0 0 31 2 *` parses but names a date that does not exist. Searching from a fixed
        // start keeps validation deterministic; every real date recurs within 28 years.
        use chrono::TimeZone as _;
        let start = chrono::Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        if parsed.find_next_occurrence(&start, true).is_err() {
            return Err(format!(
                "cron schedule `{text}` never fires: no date matches its day and month; \
                 check the day of the month"
            ));
        }
        Ok(Cron {
            text: text.to_owned(),
            parsed: std::sync::Arc::new(parsed),
        })
    }
}

macro_rules! string_scalar {
    ($ty:ty, $name:literal, $pattern:literal, $description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

string_scalar!(
    Duration,
    "Duration",
    "^([0-9]+(ms|s|m|h|d))+$",
    "A duration: a number and a unit (ms, s, m, h, d), parts may be summed: `30s`, `5m`, `1h30m`."
);
string_scalar!(
    Size,
    "Size",
    "^[0-9]+([kKmMgGtT]i?)?[bB]?$",
    "A size in bytes, with an optional binary unit: `512Mi`, `1Gi` (1G = 1Gi, as in docker)."
);
string_scalar!(
    Cron,
    "Cron",
    "^(@[a-z]+|\\S+( \\S+){4})$",
    "A cron schedule with five fields (minute hour day month weekday), such as `0 3 * * *`, or `@daily`."
);

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1d", 86_400_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.get().as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), text);
        }
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "1.5s",
            "10sec",
            "-1s",
            "99999999999999999999999d",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("512Mi", 512 << 20),
            ("1G", 1 << 30),
            ("1Gi", 1 << 30),
            ("64k", 64 << 10),
            ("100", 100),
            ("2GB", 2 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Size>().unwrap().bytes(), bytes, "{text}");
        }
        assert_eq!("1024Mi".parse::<Size>().unwrap().to_string(), "1Gi");
        for bad in ["", "Mi", "1.5Gi", "12Qi", "-1", "99999999999Ti"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn crons() {
        for good in ["0 3 * * *", "*/15 * * * *", "0 4 * * mon-fri", "@daily"] {
            assert!(good.parse::<Cron>().is_ok(), "{good}");
        }
        for bad in ["0 3 * *", "61 * * * *", "0 0 3 * * *", "nonsense"] {
            assert!(bad.parse::<Cron>().is_err(), "{bad}");
        }
    }
}
