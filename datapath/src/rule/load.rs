//! Reading rule sets from YAML and JSON, with errors that name the rule id.

use super::packed::PackedRun;
use super::{RuleError, RuleSet};
use serde_json::Value;

impl RuleSet {
    /// Parses and validates a YAML rule set.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule id and field of the first problem.
    pub fn from_yaml(text: &str) -> Result<RuleSet, RuleError> {
        let set = Self::parse_yaml(text)?;
        set.validate()?;
        Ok(set)
    }

    /// Parses a YAML rule set into the model without validating it (see
    /// [`RuleSet::validate`]): only its shape is checked, unknown fields
    /// refused.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule id and field of the first problem.
    pub fn parse_yaml(text: &str) -> Result<RuleSet, RuleError> {
        let doc: Value =
            serde_norway::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?;
        Self::parse_value(doc)
    }

    /// Parses and validates a JSON rule set.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule id and field of the first problem.
    pub fn from_json(text: &str) -> Result<RuleSet, RuleError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?;
        Self::from_value(doc)
    }

    /// Parses YAML or JSON, picking by the first non-blank character.
    ///
    /// # Errors
    /// As [`RuleSet::from_yaml`].
    pub fn from_text(text: &str) -> Result<RuleSet, RuleError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_yaml(text)
        }
    }

    /// Parses a JSON rule set into the model without validating it (see
    /// [`RuleSet::validate`]), straight into the rule model (twice as fast
    /// as through a JSON value for a million rules); only a document that
    /// fails is parsed again, to name the rule and field that are wrong.
    ///
    /// Given the body itself rather than a reference, it frees the body
    /// before the rules take their full size: each rule is parsed on one
    /// of the CPUs straight into its packed form (40 bytes an exact rule,
    /// end to end in one buffer a CPU), and unpacked (180 bytes) only once
    /// the body is gone. A million-rule request then peaks at its body and
    /// the packed rules, not at its body and the parsed rules.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule id and field of the first problem.
    pub fn parse_json_bytes<B: AsRef<[u8]>>(body: B) -> Result<RuleSet, RuleError> {
        if let Some(packed) = parse_parallel(body.as_ref()) {
            drop(body);
            return Ok(packed.unpack());
        }
        let text = std::str::from_utf8(body.as_ref())
            .map_err(|e| RuleError::Syntax(format!("the document is not UTF-8: {e}")))?;
        let doc: Value =
            serde_json::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?;
        Self::parse_value(doc)
    }

    /// Deserializes and validates a document already parsed into a JSON value.
    ///
    /// # Errors
    /// As [`RuleSet::from_yaml`].
    pub fn from_value(doc: Value) -> Result<RuleSet, RuleError> {
        let set = Self::parse_value(doc)?;
        set.validate()?;
        Ok(set)
    }

    fn parse_value(doc: Value) -> Result<RuleSet, RuleError> {
        if !doc.is_object() {
            return Err(RuleError::Syntax(
                "a rule set is a mapping of `ports`, `meters` and `rules`".into(),
            ));
        }
        // Strict: serde would read a list's items as a struct's fields in order.
        crate::strict::with_path(&doc).map_err(|e| locate(&doc, e))
    }

    /// The rule set as YAML.
    pub fn to_yaml(&self) -> String {
        // Through a JSON value, so that enums come out as maps (`{output: p1}`)
        // rather than YAML tags, which the loader would not read back.
        let value = serde_json::to_value(self).expect("a rule set always serializes");
        serde_norway::to_string(&value).expect("a JSON value always serializes")
    }
}

/// The document with its rules only skimmed: each rule's JSON text.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Skimmed<'a> {
    #[serde(default, borrow)]
    ports: Vec<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    meters: Vec<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    rules: Vec<&'a serde_json::value::RawValue>,
}

/// A rule set read with its rules packed, a run for each CPU that read them.
struct PackedSet {
    ports: Vec<super::PortDef>,
    meters: Vec<super::MeterDef>,
    runs: Vec<PackedRun>,
}

impl PackedSet {
    /// The rule set, its rules unpacked, each run freed once it is. (On
    /// one CPU: unpacked on each, a million rules took as long, the lists
    /// then joined.)
    fn unpack(self) -> RuleSet {
        let count = self.runs.iter().map(PackedRun::len).sum();
        let mut rules = Vec::with_capacity(count);
        for run in self.runs {
            rules.extend(run.rules());
        }
        RuleSet {
            ports: self.ports,
            meters: self.meters,
            rules,
        }
    }
}

/// Parses a well-formed document fast: the rules are skimmed first, then
/// parsed on every CPU, each packed as soon as it is read. `None` if
/// anything is wrong (the caller parses again, slowly, to name what).
fn parse_parallel(bytes: &[u8]) -> Option<PackedSet> {
    // Strict throughout: a list where a struct belongs takes the checked
    // path, which names it.
    let skimmed: Skimmed<'_> = crate::strict::from_slice(bytes).ok()?;
    let ports = skimmed
        .ports
        .iter()
        .map(|raw| crate::strict::from_str(raw.get()).ok())
        .collect::<Option<Vec<super::PortDef>>>()?;
    let meters = skimmed
        .meters
        .iter()
        .map(|raw| crate::strict::from_str(raw.get()).ok())
        .collect::<Option<Vec<super::MeterDef>>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = skimmed.rules.len().div_ceil(threads).max(1);
    let runs: Vec<Option<PackedRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = skimmed
            .rules
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut run = PackedRun::with_capacity(part.len() * 40);
                    for raw in part {
                        let rule: super::Rule = crate::strict::from_str(raw.get()).ok()?;
                        run.push(&rule);
                    }
                    Some(run)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parsing does not panic"))
            .collect()
    });
    Some(PackedSet {
        ports,
        meters,
        runs: runs.into_iter().collect::<Option<_>>()?,
    })
}

/// Turns a path like `rules[3].match.ip_src` into "rule <id>, field match.ip_src".
fn locate(doc: &Value, e: serde_path_to_error::Error<serde_json::Error>) -> RuleError {
    let path = e.path().to_string();
    let reason = e.into_inner().to_string();
    let reason = reason
        .split(" at line ")
        .next()
        .unwrap_or(&reason)
        .to_string();
    if let Some(rest) = path.strip_prefix("rules[")
        && let Some((index, field)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
        && let Some(id) = doc["rules"][index]["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
    {
        return RuleError::rule(id, field.trim_start_matches('.'), reason);
    }
    RuleError::doc(
        if path == "." {
            "(document)".to_string()
        } else {
            path
        },
        reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed rule holds its actions in exactly the memory they need: a
    /// million rules each with room for four would hold 288 spare bytes
    /// each.
    #[test]
    fn parsed_actions_hold_no_spare_room() {
        let one = r#"{"id": 1, "priority": 1, "actions": [{"output": "p0"}]}"#;
        let json = format!(
            r#"{{"ports": [{{"name": "p0", "index": 0}}], "rules": [{one}, {}]}}"#,
            one.replace("\"id\": 1", "\"id\": 2")
        );
        for set in [
            RuleSet::parse_json_bytes(json.as_bytes()).unwrap(),
            RuleSet::parse_yaml(&json).unwrap(),
        ] {
            for r in &set.rules {
                assert_eq!(r.actions.capacity(), r.actions.len(), "rule {}", r.id);
            }
        }
    }
}
