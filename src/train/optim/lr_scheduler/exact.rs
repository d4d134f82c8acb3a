//! Exact `f64`s in our own (JSON) format: each float is written as its shortest round-trip
//! decimal string (`"0.1"`, `"2e-6"`) and parsed back with Rust's correctly rounded parser.
//!
//! serde_json's default float parser (without its `float_roundtrip` feature) may be one ulp
//! off, and a learning rate one ulp off is no longer an exact resume.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value with floats inside that has an exact serialisable form.
pub trait Exact: Sized {
    type Repr: Serialize + DeserializeOwned;
    fn to_repr(&self) -> Self::Repr;
    fn from_repr(repr: Self::Repr) -> Result<Self, String>;
}

impl Exact for f64 {
    type Repr = String;
    fn to_repr(&self) -> String {
        // `{:?}` is the shortest string that parses back to the same bits (and keeps `-0.0`).
        format!("{self:?}")
    }
    fn from_repr(repr: String) -> Result<Self, String> {
        repr.parse().map_err(|_| format!("`{repr}` is not a float"))
    }
}

impl<T: Exact> Exact for Vec<T> {
    type Repr = Vec<T::Repr>;
    fn to_repr(&self) -> Self::Repr {
        self.iter().map(Exact::to_repr).collect()
    }
    fn from_repr(repr: Self::Repr) -> Result<Self, String> {
        repr.into_iter().map(T::from_repr).collect()
    }
}

impl<T: Exact> Exact for Option<T> {
    type Repr = Option<T::Repr>;
    fn to_repr(&self) -> Self::Repr {
        self.as_ref().map(Exact::to_repr)
    }
    fn from_repr(repr: Self::Repr) -> Result<Self, String> {
        repr.map(T::from_repr).transpose()
    }
}

/// For `#[serde(with = "exact")]`.
pub fn serialize<T: Exact, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    value.to_repr().serialize(serializer)
}

/// For `#[serde(with = "exact")]`.
pub fn deserialize<'de, T: Exact, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    T::from_repr(T::Repr::deserialize(deserializer)?).map_err(D::Error::custom)
}
