//! Identifiers parsed at the edge: past it, a `TenantId` cannot be a `UserId` and no raw string is trusted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Length of the random part of every id (a lowercase ULID).
const BODY_LEN: usize = 26;

fn is_crockford_lower(c: char) -> bool {
    matches!(c, '0'..='9' | 'a'..='h' | 'j' | 'k' | 'm' | 'n' | 'p'..='t' | 'v'..='z')
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("A ", $what, " id: `", $prefix, "` and a lowercase ULID, fixed length so that no id is a prefix of another.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            pub const LEN: usize = $prefix.len() + BODY_LEN;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::new().to_string().to_lowercase()))
            }

            /// Accepts exactly what `generate` makes.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let ok = raw.len() == Self::LEN
                    && raw.starts_with($prefix)
                    && raw[$prefix.len()..].chars().all(is_crockford_lower);
                if ok {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(IdError { what: $what, prefix: $prefix })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(TenantId, "ten_", "tenant");
prefixed_id!(UserId, "usr_", "user");
prefixed_id!(KeyId, "key_", "API key");

/// An id that does not have the shape of its kind.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid {what} id: expected `{prefix}` followed by 26 lowercase letters and digits")]
pub struct IdError {
    pub what: &'static str,
    pub prefix: &'static str,
}

/// The tenant's own identifier for an end user (their login's `sub`): 1 to 256 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 256 {
            return Err("external_id must be 1 to 256 characters long".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("external_id must not contain control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExternalId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl From<ExternalId> for String {
    fn from(id: ExternalId) -> String {
        id.0
    }
}

/// An email address, checked for shape only (the tenant owns verification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        let valid = trimmed.len() <= 254
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control())
            && trimmed
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
        if valid {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(format!("`{raw}` is not an email address like name@example.com"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_parses_back_and_has_a_fixed_length() {
        let id = TenantId::generate();
        assert_eq!(id.as_str().len(), TenantId::LEN);
        assert_eq!(TenantId::parse(id.as_str()).ok(), Some(id));
    }

    #[test]
    fn an_id_of_another_kind_is_refused() {
        let user = UserId::generate();
        assert!(TenantId::parse(user.as_str()).is_err());
        assert!(TenantId::parse("ten_../etc/passwd").is_err());
        assert!(TenantId::parse("ten_01JDAAAAAAAAAAAAAAAAAAAAAA").is_err(), "uppercase is not ours");
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(Email::parse("ana@example.com").is_ok());
        assert!(Email::parse("ana example.com").is_err());
        assert!(Email::parse("@example.com").is_err());
        assert!(Email::parse("ana@localhost").is_err());
    }

    #[test]
    fn external_ids_refuse_empty_long_and_control_characters() {
        assert!(ExternalId::parse("auth0|123").is_ok());
        assert!(ExternalId::parse("").is_err());
        assert!(ExternalId::parse(&"x".repeat(257)).is_err());
        assert!(ExternalId::parse("a\u{0}b").is_err());
    }
}
