//! `[[triggers]]` in `fn.toml`: which events a function gets, in Knative Trigger's own filter
//! dialects, so a manifest's triggers render to Knative `Trigger`s one to one.
//!
//! - `filter.attributes`: exact match on every listed attribute (Knative's `spec.filter`);
//! - `filters`: a list of expressions that must all hold (Knative's `spec.filters`): `exact`,
//!   `prefix`, `suffix` (maps of attribute → value, all of which must match), `all`, `any`,
//!   `not`. `cesql` is refused: it is not implemented here.
//!
//! Attributes are the context attributes (`id`, `source`, `type`, `subject`, ...) and the
//! extensions, by name. An event without the attribute does not match.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `[[triggers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Knative's `spec.filter`: `attributes` matched exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AttributesFilter>,
    /// Knative's `spec.filters`: every expression must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Whether this function's reply event is the answer to the event (default true). When
    /// several functions' triggers match one event, the reply comes from the first of them in
    /// name order that has `reply = true`; see docs/api.md.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub reply: bool,
    /// How a Knative Broker retries this trigger's deliveries (rendered by `fn deploy
    /// --knative` into the Trigger's `spec.delivery`; the runtime itself does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// `[triggers.delivery]`: Knative's `DeliverySpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Retries before the event goes to the dead-letter sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// `linear` or `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// The first retry's delay, an ISO 8601 duration (`PT0.5S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// Where undeliverable events go: a URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<String>,
}

/// Knative's backoff policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// delay × retries.
    Linear,
    /// delay × 2^retries.
    Exponential,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `filter = { attributes = { type = "..." } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesFilter {
    /// Attribute name → the exact value.
    pub attributes: BTreeMap<String, String>,
}

/// One expression of Knative's `filters` dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    /// Every listed attribute equals its value.
    Exact(BTreeMap<String, String>),
    /// Every listed attribute starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Every listed attribute ends with its value.
    Suffix(BTreeMap<String, String>),
    /// Every nested expression holds.
    All(Vec<Filter>),
    /// At least one nested expression holds.
    Any(Vec<Filter>),
    /// The nested expression does not hold.
    Not(Box<Filter>),
    /// A CloudEvents SQL expression: refused by [`Trigger::validate`].
    Cesql(String),
}

/// What a filter reads from an event: an attribute or extension by name.
pub trait Attributes {
    /// The attribute's value as a string, if the event has it (borrowed where it is one).
    fn attribute(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Trigger {
    /// Checks the rules Knative's webhook enforces: non-empty names and values, non-empty
    /// `all`/`any`, no `cesql`, not both `filter` and `filters`.
    pub fn validate(&self) -> Result<(), String> {
        if self.filter.is_some() && !self.filters.is_empty() {
            return Err(
                "set `filter` or `filters`, not both (Knative ignores `filter` when `filters` is set)"
                    .into(),
            );
        }
        if let Some(f) = &self.filter {
            check_map("filter.attributes", &f.attributes)?;
        }
        if let Some(delay) = self
            .delivery
            .as_ref()
            .and_then(|d| d.backoff_delay.as_deref())
            && (!delay.starts_with('P') || delay.len() < 3)
        {
            return Err(format!(
                "delivery.backoff_delay {delay:?} is not an ISO 8601 duration like \"PT0.5S\""
            ));
        }
        self.filters.iter().try_for_each(Filter::validate)
    }

    /// Whether the event passes this trigger. No filter at all passes every event.
    pub fn matches(&self, event: &impl Attributes) -> bool {
        match &self.filter {
            Some(f) if self.filters.is_empty() => f
                .attributes
                .iter()
                .all(|(k, v)| event.attribute(k).as_deref() == Some(v)),
            _ => self.filters.iter().all(|f| f.matches(event)),
        }
    }
}

impl Filter {
    fn validate(&self) -> Result<(), String> {
        match self {
            Filter::Exact(m) => check_map("exact", m),
            Filter::Prefix(m) => check_map("prefix", m),
            Filter::Suffix(m) => check_map("suffix", m),
            Filter::All(v) | Filter::Any(v) if v.is_empty() => Err(format!(
                "`{}` needs at least one filter expression",
                if matches!(self, Filter::All(_)) {
                    "all"
                } else {
                    "any"
                }
            )),
            Filter::All(v) | Filter::Any(v) => v.iter().try_for_each(Filter::validate),
            Filter::Not(f) => f.validate(),
            Filter::Cesql(_) => Err(
                "`cesql` filters are not supported; use exact, prefix, suffix, all, any and not"
                    .into(),
            ),
        }
    }

    fn matches(&self, event: &impl Attributes) -> bool {
        let each = |m: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            m.iter()
                .all(|(k, v)| event.attribute(k).is_some_and(|a| test(&a, v)))
        };
        match self {
            Filter::Exact(m) => each(m, |a, v| a == v),
            Filter::Prefix(m) => each(m, |a, v| a.starts_with(v)),
            Filter::Suffix(m) => each(m, |a, v| a.ends_with(v)),
            Filter::All(v) => v.iter().all(|f| f.matches(event)),
            Filter::Any(v) => v.iter().any(|f| f.matches(event)),
            Filter::Not(f) => !f.matches(event),
            Filter::Cesql(_) => false,
        }
    }
}

fn check_map(what: &str, m: &BTreeMap<String, String>) -> Result<(), String> {
    if m.is_empty() {
        return Err(format!("`{what}` needs at least one attribute"));
    }
    match m.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
        Some((k, _)) => Err(format!(
            "`{what}`: attribute names and values must not be empty (attribute {k:?})"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ev(Vec<(&'static str, &'static str)>);

    impl Attributes for Ev {
        fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| Cow::Borrowed(*v))
        }
    }

    fn trigger(toml_text: &str) -> Trigger {
        let t: Trigger = toml::from_str(toml_text).unwrap();
        t.validate().unwrap();
        t
    }

    fn build_failed() -> Ev {
        Ev(vec![
            ("type", "dev.ci.build.failed"),
            ("source", "/ci/github/acme"),
            ("branch", "main"),
        ])
    }

    #[test]
    fn attributes_match_exactly() {
        let t = trigger(
            r#"filter = { attributes = { type = "dev.ci.build.failed", branch = "main" } }"#,
        );
        assert!(t.matches(&build_failed()));
        let t = trigger(r#"filter = { attributes = { type = "dev.ci.build" } }"#);
        assert!(!t.matches(&build_failed()));
        let t = trigger(r#"filter = { attributes = { subject = "x" } }"#);
        assert!(
            !t.matches(&build_failed()),
            "a missing attribute never matches"
        );
    }

    #[test]
    fn the_filters_dialects_compose() {
        let t = trigger(
            r#"filters = [
                { prefix = { type = "dev.ci." } },
                { suffix = { type = ".failed" } },
                { any = [ { exact = { branch = "main" } }, { exact = { branch = "release" } } ] },
                { not = { prefix = { source = "/ci/gitlab" } } },
            ]"#,
        );
        assert!(t.matches(&build_failed()));
        let t = trigger(r#"filters = [ { not = { exact = { branch = "main" } } } ]"#);
        assert!(!t.matches(&build_failed()));
        let t = trigger(
            r#"filters = [ { all = [ { exact = { type = "dev.ci.build.failed" } }, { prefix = { source = "/cd" } } ] } ]"#,
        );
        assert!(!t.matches(&build_failed()));
        assert!(
            trigger("").matches(&build_failed()),
            "no filter passes everything"
        );
    }

    #[test]
    fn knatives_rules_are_enforced() {
        for (text, needle) in [
            (r#"filters = [ { cesql = "type = 'x'" } ]"#, "cesql"),
            (r#"filters = [ { any = [] } ]"#, "`any` needs"),
            (
                r#"filters = [ { exact = { type = "" } } ]"#,
                "must not be empty",
            ),
            (r#"filters = [ { prefix = {} } ]"#, "at least one attribute"),
            (
                r#"filter = { attributes = { type = "a" } }
                   filters = [ { exact = { type = "a" } } ]"#,
                "not both",
            ),
        ] {
            let t: Trigger = toml::from_str(text).unwrap();
            let err = t.validate().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(toml::from_str::<Trigger>(r#"filters = [ { regex = { type = "a" } } ]"#).is_err());
    }
}
