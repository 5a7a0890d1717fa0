//! The one rule for names users give things: clusters, hosts, DPU serials,
//! datapaths, ports and meters. Names become URL path segments, file
//! names and bpffs pins, so the rule keeps them to one path component that
//! needs no escaping: 1 to [`MAX_NAME`] ASCII letters, digits, `.`, `-`
//! and `_`, starting with a letter or a digit (so never `.` or `..`).

use std::fmt;

/// The longest name, in bytes (a DNS label's limit).
pub const MAX_NAME: usize = 63;

/// What is allowed, for error messages.
pub const ALLOWED: &str =
    "use 1 to 63 ASCII letters, digits, '.', '-' or '_', starting with a letter or a digit";

/// A name that breaks the rule: what it names, the name (cut short if it
/// is long) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {shown}: {reason}; {ALLOWED}")]
pub struct NameError {
    /// What the name names, such as `cluster name` or `DPU serial`.
    pub what: String,
    /// The name as shown: quoted, and cut to 40 characters.
    pub shown: Shown,
    /// Why it is refused.
    pub reason: String,
}

/// A name quoted for a message, cut to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(String);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shows `s` quoted for a message, cut to 40 characters.
pub fn shown(s: &str) -> Shown {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        Shown(format!("{head:?}… ({} bytes)", s.len()))
    } else {
        Shown(format!("{head:?}"))
    }
}

/// Checks `name`, which names `what` (for the message).
///
/// # Errors
/// [`NameError`] saying what is wrong and what is allowed.
pub fn check(what: &str, name: &str) -> Result<(), NameError> {
    let refuse = |reason: String| NameError {
        what: what.to_owned(),
        shown: shown(name),
        reason,
    };
    if name.is_empty() {
        return Err(refuse("empty".into()));
    }
    if name.len() > MAX_NAME {
        return Err(refuse(format!("{} bytes long", name.len())));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(refuse(format!("{c:?} is not allowed")));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(refuse("it must start with a letter or a digit".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for good in ["a", "dpu0", "BF3-SN.001", "x_y", "9", &"a".repeat(63)] {
            assert_eq!(check("name", good), Ok(()), "{good}");
        }
        let cases: [(&str, &str); 9] = [
            ("", "empty"),
            ("..", "start with a letter"),
            (".hidden", "start with a letter"),
            ("-x", "start with a letter"),
            ("a b", "' ' is not allowed"),
            ("a/b", "'/' is not allowed"),
            ("../../x", "'/' is not allowed"),
            ("naïve", "'ï' is not allowed"),
            ("a\0b", "'\\0' is not allowed"),
        ];
        for (bad, says) in cases {
            let e = check("cluster name", bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.starts_with("cluster name "), "{e}");
            assert!(e.contains(ALLOWED), "{e}");
        }
        let long = "x".repeat(200_000);
        let e = check("host name", &long).unwrap_err().to_string();
        assert!(e.contains("200000 bytes long"), "{e}");
        assert!(
            e.len() < 300,
            "a long name is cut short in the message: {e}"
        );
    }
}
