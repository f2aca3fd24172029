//! The value types keys are written in: secrets, exact decimals,
//! durations (`"30s"`) and byte sizes (`"64MiB"`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::NaiveDate;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::decimal::parse_plain_decimal;

/// A secret string: deserialized like a string, printed as `***`. A value of
/// another type is refused without being shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl Visitor {
            fn refuse<E: de::Error>(self) -> Result<Secret, E> {
                Err(E::custom("must be a string (the value is not shown)"))
            }
        }
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Secret, E> {
                Ok(Secret(text.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                self.refuse()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                self.refuse()
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                self.refuse()
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Written as the secret itself, so that a configuration written back reads
/// the same; only [`super::Config`]'s whole file carries secrets, never the
/// billing text of a closing.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An exact decimal read from a TOML string (`"0.0400"`) or integer (`3600`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDecimal(pub BigDecimal);

impl ConfigDecimal {
    pub(super) fn from_static(text: &str) -> Self {
        ConfigDecimal(BigDecimal::from_str(text).expect("built-in decimal"))
    }
}

impl<'de> Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ConfigDecimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal as a string such as \"0.04\", or an integer")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDecimal, E> {
                parse_plain_decimal(text)
                    .map(ConfigDecimal)
                    .ok_or_else(|| E::custom(format!("{text:?} is not a decimal number")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigDecimal, E> {
                Ok(ConfigDecimal(BigDecimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigDecimal, E> {
                Ok(ConfigDecimal(BigDecimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigDecimal, E> {
                Err(E::custom(format!(
                    "write decimals as strings (\"{v}\"): a TOML float is not exact"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Written as a string with every digit it has (`"0.0400"`, not `"0.04"`).
impl Serialize for ConfigDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_plain_string())
    }
}

/// A UTC date written `YYYY-MM-DD`, such as a rate's `effective_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDate(pub NaiveDate);

impl<'de> Deserialize<'de> for ConfigDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(ConfigDate)
            .map_err(|_| de::Error::custom("must be a date YYYY-MM-DD"))
    }
}

impl Serialize for ConfigDate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.format("%Y-%m-%d"))
    }
}

/// A duration written like `30s`, `15m`, `1h`, `1d` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?} needs a unit (ms, s, m, h, d)"))?;
        let (number, unit) = text.split_at(split);
        let amount: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as \"30s\" or \"1h\""))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit (use ms, s, m, h or d)"
                ));
            }
        };
        amount
            .checked_mul(millis_per_unit)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that writes the duration exactly: `1h`, `90s`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        let units = [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ];
        match units
            .iter()
            .find(|(_, per_unit)| millis.is_multiple_of(*per_unit))
        {
            Some((unit, per_unit)) => write!(f, "{}{unit}", millis / per_unit),
            None => write!(f, "{millis}ms"),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A size in bytes written like `64MiB`, `512KiB`, `1GiB` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let amount: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as \"64MiB\""))?;
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit (use B, KiB, MiB or GiB)"
                ));
            }
        };
        amount
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that writes the size exactly: `64MiB`, `1500B`, `0B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match units
            .iter()
            .find(|(_, per_unit)| self.0 != 0 && self.0.is_multiple_of(*per_unit))
        {
            Some((unit, per_unit)) => write!(f, "{}{unit}", self.0 / per_unit),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or an integer number of bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
