//! The error of loading and validating a rule set.

/// Why a rule set was refused. Nothing of a refused rule set is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The document is not YAML/JSON, or not shaped like a rule set.
    #[error("rule document: {0}")]
    Syntax(String),
    /// A field of a rule is wrong.
    #[error("rule {rule}, field `{field}`: {reason}")]
    Rule {
        /// The rule's id.
        rule: u32,
        /// The field's path inside the rule, e.g. `match.ip_src`.
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// Something outside a rule (a port, a meter, or a rule without an id) is wrong.
    #[error("`{field}`: {reason}")]
    Document {
        /// The field's path in the document, e.g. `ports[2].index`.
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl RuleError {
    pub(crate) fn rule(rule: u32, field: impl Into<String>, reason: impl Into<String>) -> Self {
        RuleError::Rule {
            rule,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn doc(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RuleError::Document {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
