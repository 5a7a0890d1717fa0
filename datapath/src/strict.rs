//! A serde adapter that refuses a list where a struct belongs, at any depth.
//!
//! serde's derived `Deserialize` reads a struct from a sequence as its
//! fields in order, so `["c9", "image", "8.0.3"]` is a cluster and `[]` is
//! an emulation with every field defaulted. No attribute turns that off.
//! (serde_norway refuses it for YAML on its own; serde_json does not.)
//! [`Strict`] wraps any deserializer (JSON text, a JSON value) and hands
//! every struct visitor a wrapper whose `visit_seq` fails; every nested
//! value is read through [`Strict`] again, so the rule holds inside lists,
//! maps, options and enums alike.
//!
//! Types that buffer their input first (`#[serde(untagged)]`,
//! `#[serde(flatten)]`, internally tagged enums) read their inner structs
//! from serde's buffer, outside the adapter; none of the request and file
//! types relies on a struct inside such a type.

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use std::fmt;

/// What a refused list is told it should have been.
const MAPPING: &str = "a mapping of fields (a JSON object)";

/// A deserializer that refuses to read a struct from a sequence.
pub struct Strict<D>(pub D);

/// Reads `T` from JSON text, refusing lists where structs belong.
///
/// # Errors
/// serde_json's error, with line and column.
pub fn from_str<'de, T: de::Deserialize<'de>>(text: &'de str) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// Reads `T` from JSON bytes, refusing lists where structs belong.
///
/// # Errors
/// serde_json's error, with line and column.
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// Reads `T` from a deserializer with the path of the field that failed
/// (as `serde_path_to_error` gives it), refusing lists where structs belong.
///
/// # Errors
/// The inner error with its path.
pub fn with_path<'de, D: Deserializer<'de>, T: de::Deserialize<'de>>(
    deserializer: D,
) -> Result<T, serde_path_to_error::Error<D::Error>> {
    serde_path_to_error::deserialize(Strict(deserializer))
}

macro_rules! forward {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(Wrap(visitor))
        }
    )*};
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(Wrap(Integral(visitor)))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_bool deserialize_i128 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0
            .deserialize_struct(name, fields, Wrap(NoSeq(visitor)))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A struct's visitor that refuses a sequence.
struct NoSeq<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for NoSeq<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(MAPPING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::invalid_type(Unexpected::Seq, &MAPPING))
    }
}

macro_rules! visit {
    ($($method:ident: $t:ty)*) => {$(
        fn $method<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
            self.0.$method(v)
        }
    )*};
}

/// An integer's visitor that also takes a float with no fraction: JSON has
/// one number type, and JSON Schema's `integer` admits `670.0`. The inner
/// visitor still checks the range (`1e25` is no `u32`).
struct Integral<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Integral<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    visit! {
        visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64
        visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // Exact below 2^63 and 2^64: a float at or over the bound is no
        // integer of any width this adapter serves.
        const I64: f64 = 9_223_372_036_854_775_808.0;
        const U64: f64 = 18_446_744_073_709_551_616.0;
        if v.fract() == 0.0 && (0.0..U64).contains(&v) {
            self.0.visit_u64(v as u64)
        } else if v.fract() == 0.0 && (-I64..0.0).contains(&v) {
            self.0.visit_i64(v as i64)
        } else {
            self.0.visit_f64(v)
        }
    }
}

/// A visitor whose nested values are read through [`Strict`].
struct Wrap<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    visit! {
        visit_bool: bool visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64
        visit_i128: i128 visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64
        visit_u128: u128 visit_f32: f32 visit_f64: f64 visit_char: char
        visit_str: &str visit_borrowed_str: &'de str visit_string: String
        visit_bytes: &[u8] visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Wrap(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Wrap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Wrap(data))
    }
}

/// A seed whose value is read through [`Strict`].
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Wrap(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(NoSeq(visitor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Plain,
        Wrapped(Inner),
        Fields { x: u32 },
        Pair(u32, u32),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        inner: Inner,
        list: Vec<Inner>,
        maybe: Option<Inner>,
        kinds: Vec<Kind>,
        pairs: Vec<(u32, String)>,
    }

    const GOOD: &str = r#"{"inner": {"a": 1}, "list": [{"a": 2, "b": "x"}], "maybe": {"a": 3},
        "kinds": ["plain", {"wrapped": {"a": 4}}, {"fields": {"x": 5}}, {"pair": [6, 7]}],
        "pairs": [[8, "y"]]}"#;

    #[test]
    fn mappings_lists_and_tuples_read_as_before() {
        let strict: Outer = from_str(GOOD).unwrap();
        let plain: Outer = serde_json::from_str(GOOD).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn a_list_is_refused_wherever_a_struct_belongs() {
        let cases = [
            ("top", r#"[{"a": 1}, [], null, [], []]"#, "."),
            ("field", &GOOD.replace(r#"{"a": 1}"#, "[1]"), "inner"),
            (
                "in a list",
                &GOOD.replace(r#"{"a": 2, "b": "x"}"#, "[2]"),
                "list[0]",
            ),
            ("in an option", &GOOD.replace(r#"{"a": 3}"#, "[3]"), "maybe"),
            (
                "newtype variant",
                &GOOD.replace(r#"{"a": 4}"#, "[4]"),
                "kinds[1].wrapped",
            ),
            (
                "struct variant",
                &GOOD.replace(r#"{"x": 5}"#, "[5]"),
                "kinds[2].fields",
            ),
        ];
        for (what, text, path) in cases {
            let json = with_path::<_, Outer>(&mut serde_json::Deserializer::from_str(text))
                .expect_err(what);
            assert_eq!(json.path().to_string(), path, "{what}");
            assert!(json.to_string().contains(MAPPING), "{what}: {json}");
            // The adapter is what refuses it: serde alone reads the list.
            assert!(serde_json::from_str::<Outer>(text).is_ok(), "{what}");
        }
    }

    #[test]
    fn integral_floats_are_integers_and_the_range_still_holds() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct N {
            a: u32,
            b: i8,
            c: Option<u64>,
        }
        let n: N = from_str(r#"{"a": 670.0, "b": -3.0, "c": 1e3}"#).unwrap();
        assert_eq!(
            n,
            N {
                a: 670,
                b: -3,
                c: Some(1000)
            }
        );
        for bad in [
            r#"{"a": 1.5, "b": 0, "c": null}"#,
            r#"{"a": 1.7e25, "b": 0, "c": null}"#,
            r#"{"a": 4294967296.0, "b": 0, "c": null}"#,
            r#"{"a": 0, "b": -129.0, "c": null}"#,
            r#"{"a": -1.0, "b": 0, "c": null}"#,
        ] {
            assert!(from_str::<N>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(from_str::<Inner>(r#"{"a": 1} x"#).is_err());
        assert!(from_slice::<Inner>(br#"{"a": 1}"#).is_ok());
    }
}
