//! Every key routes.toml takes, by table: read off the config types themselves (serde knows
//! each struct's field names) and the backend kinds' own lists, so that a test can hold the
//! README to exactly these.

use std::collections::BTreeMap;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Table name → the keys it takes.
pub fn keys() -> BTreeMap<String, Vec<&'static str>> {
    let mut tables: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut add = |table: &str, keys: &[&'static str]| {
        tables.insert(table.to_owned(), keys.to_vec());
    };
    add("[server]", fields::<super::raw::RawServer>());
    add(
        "[server] session_keys",
        fields::<super::raw::RawSessionKey>(),
    );
    add("[server] rate_limit", fields::<super::raw::RawRateLimits>());
    add("[builtin]", fields::<super::raw::RawBuiltin>());
    add("[ice_server.NAME]", fields::<super::raw::RawIceServer>());
    add(
        "[client_auth.NAME] mode = \"jwt\"",
        fields::<crate::auth::RawJwt>(),
    );
    add(
        "[client_auth.NAME] tokens",
        fields::<crate::auth::RawBearerToken>(),
    );
    add("[[route]]", fields::<super::raw::RawRoute>());
    add("[[route]] match", fields::<super::raw::RawMatch>());
    add("[[route]] split", fields::<super::raw::RawSplit>());
    add("sdp", fields::<crate::sdp::Policy>());
    add(
        "sdp header_extensions",
        fields::<crate::sdp::ExtensionFilter>(),
    );
    add("sdp answer", fields::<crate::sdp::AnswerPolicy>());
    add("[[backend]] circuit", fields::<super::raw::RawCircuit>());
    add(
        "[[backend]] health_check",
        fields::<super::raw::RawHealthCheck>(),
    );
    add("[[backend]]", crate::backend::COMMON_KEYS);
    for kind in crate::backend::kind_names() {
        add(
            &format!("[[backend]] kind = \"{kind}\""),
            crate::backend::kind_keys(kind).unwrap_or_default(),
        );
    }
    // Shapes not worth a struct of their own.
    add(
        "[[backend]] kind = \"whip\" auth",
        &["bearer_env", "bearer_file", "passthrough"],
    );
    add("[[backend]] api_rate_limit", &["per_second", "burst"]);
    add("[client_auth.NAME]", &["mode", "tokens"]);
    tables
}

/// The field names serde reads for `T` (a struct).
fn fields<T: Deserialize<'static>>() -> &'static [&'static str] {
    let mut introspect = Introspect(&[]);
    let _ = T::deserialize(&mut introspect);
    introspect.0
}

/// A deserializer that only records the field list a struct asks it for.
struct Introspect(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut Introspect {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
