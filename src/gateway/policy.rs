//! The gateway's policy: which scopes each tool (and, where named, each prompt and resource)
//! needs, a baseline scope every request needs, what an unnamed tool gets, and the rate limits
//! per client, per subject and per (client, tool). Read from a TOML file; pure rules, no I/O.
//!
//! ```toml
//! resource_name = "Example MCP"
//! baseline_scope = "mcp"          # every request needs it (optional)
//! default = "deny"                # tools the policy does not name: deny (default) or allow
//! rate_per_client = "600/1m"      # optional
//! rate_per_subject = "600/1m"     # optional
//!
//! [tools]
//! "search_*" = { scope = "tools:read", rate = "60/1m" }   # rate: per client and tool
//! "delete_file" = { scope = "tools:write" }
//!
//! [prompts]                       # optional; when present, unnamed prompts follow `default`
//! "summarize" = { scope = "prompts" }
//!
//! [resources]                     # by URI pattern, same rules
//! "file:///public/*" = { scope = "files:read" }
//! ```
//!
//! Patterns are exact names or globs (`*` any run of characters, `?` one). An exact name wins
//! over any glob; among globs the longest pattern wins. A rule's `scope` may name several scopes
//! (space-separated); all are needed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Rate;
use crate::oauth::scope;

/// What a request asks for, in policy terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `tools/call` of this tool.
    Tool(&'a str),
    /// `prompts/get` of this prompt.
    Prompt(&'a str),
    /// `resources/read` of this URI.
    Resource(&'a str),
    /// Any other method: the baseline alone.
    Other,
}

/// The rule that matched a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    /// Every scope the target needs beyond the baseline.
    pub scopes: Vec<String>,
    /// Calls per client of this target (tools only).
    pub rate: Option<Rate>,
}

/// Why a target is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token lacks scopes; `needed` is every scope the call needs (baseline included).
    InsufficientScope { needed: Vec<String> },
    /// The policy does not name the target and unnamed ones are denied: no scope helps.
    NotAllowed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unnamed {
    #[default]
    Deny,
    Allow,
}

/// Rules for one kind of target, most specific first.
#[derive(Clone, Debug, Default)]
struct Rules(Vec<Rule>);

#[derive(Clone, Debug)]
pub struct Policy {
    pub resource_name: Option<String>,
    pub baseline: Vec<String>,
    pub unnamed: Unnamed,
    pub per_client: Option<Rate>,
    pub per_subject: Option<Rate>,
    tools: Rules,
    /// `None`: the policy says nothing about prompts (or resources): the baseline suffices.
    prompts: Option<Rules>,
    resources: Option<Rules>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    resource_name: Option<String>,
    baseline_scope: Option<String>,
    default: Option<Unnamed>,
    rate_per_client: Option<String>,
    rate_per_subject: Option<String>,
    #[serde(default)]
    tools: BTreeMap<String, RuleFile>,
    prompts: Option<BTreeMap<String, RuleFile>>,
    resources: Option<BTreeMap<String, RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    scope: Option<String>,
    rate: Option<String>,
}

impl Policy {
    /// No policy file: any valid token may call anything.
    pub fn open() -> Self {
        Self {
            resource_name: None,
            baseline: Vec::new(),
            unnamed: Unnamed::Allow,
            per_client: None,
            per_subject: None,
            tools: Rules::default(),
            prompts: None,
            resources: None,
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError(format!("is not a valid policy: {e}")))?;
        let rate = |what: &str, raw: &Option<String>| {
            raw.as_deref().map(|r| crate::config::rate(r).map_err(|m| PolicyError(format!("{what}: {m}")))).transpose()
        };
        Ok(Self {
            resource_name: file.resource_name,
            baseline: scopes("baseline_scope", file.baseline_scope.as_deref())?,
            unnamed: file.default.unwrap_or_default(),
            per_client: rate("rate_per_client", &file.rate_per_client)?,
            per_subject: rate("rate_per_subject", &file.rate_per_subject)?,
            tools: Rules::from_file("tools", file.tools)?,
            prompts: file.prompts.map(|p| Rules::from_file("prompts", p)).transpose()?,
            resources: file.resources.map(|r| Rules::from_file("resources", r)).transpose()?,
        })
    }

    /// Check a target against the scopes a token holds; the matched rule when allowed.
    pub fn check(&self, target: Target<'_>, held: &[String]) -> Result<Option<&Rule>, Refusal> {
        let (rules, name) = match target {
            Target::Tool(name) => (Some(&self.tools), name),
            Target::Prompt(name) => (self.prompts.as_ref(), name),
            Target::Resource(uri) => (self.resources.as_ref(), uri),
            Target::Other => (None, ""),
        };
        let rule = match rules {
            None => None,
            Some(rules) => match rules.find(name) {
                Some(rule) => Some(rule),
                None if self.unnamed == Unnamed::Allow => None,
                None => return Err(Refusal::NotAllowed),
            },
        };
        let mut needed = self.baseline.clone();
        if let Some(rule) = rule {
            needed.extend(rule.scopes.iter().cloned());
        }
        needed.sort();
        needed.dedup();
        if scope::is_subset(&needed, held) { Ok(rule) } else { Err(Refusal::InsufficientScope { needed }) }
    }

    /// The tool rules that set a per-client rate: (pattern, rate).
    pub fn rated_rules(&self) -> impl Iterator<Item = (&str, Rate)> {
        self.tools.0.iter().filter_map(|r| Some((r.pattern.as_str(), r.rate?)))
    }

    /// Every scope the policy names, for the protected resource metadata.
    pub fn scopes_supported(&self) -> Vec<String> {
        let rules = [Some(&self.tools), self.prompts.as_ref(), self.resources.as_ref()];
        let mut all: Vec<String> = self.baseline.clone();
        all.extend(rules.into_iter().flatten().flat_map(|r| r.0.iter().flat_map(|rule| rule.scopes.iter().cloned())));
        all.sort();
        all.dedup();
        all
    }
}

impl Rules {
    fn from_file(section: &str, rules: BTreeMap<String, RuleFile>) -> Result<Self, PolicyError> {
        let mut out = Vec::with_capacity(rules.len());
        for (pattern, rule) in rules {
            if pattern.is_empty() || pattern.len() > 512 {
                return Err(PolicyError(format!("[{section}]: a pattern must be 1 to 512 characters")));
            }
            let rate = match rule.rate {
                Some(raw) => {
                    Some(crate::config::rate(&raw).map_err(|m| PolicyError(format!("[{section}] {pattern:?}: {m}")))?)
                }
                None => None,
            };
            let scopes = scopes(&format!("[{section}] {pattern:?}"), rule.scope.as_deref())?;
            out.push(Rule { pattern, scopes, rate });
        }
        // Exact names first, then globs, longest (most specific) first.
        out.sort_by_key(|r| (is_glob(&r.pattern), std::cmp::Reverse(r.pattern.len())));
        Ok(Self(out))
    }

    fn find(&self, name: &str) -> Option<&Rule> {
        self.0.iter().find(|r| if is_glob(&r.pattern) { glob_matches(&r.pattern, name) } else { r.pattern == name })
    }
}

fn scopes(what: &str, raw: Option<&str>) -> Result<Vec<String>, PolicyError> {
    match raw {
        None => Ok(Vec::new()),
        Some(raw) => scope::parse(raw).map_err(|m| PolicyError(format!("{what}: {m}"))),
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// `*` matches any run of characters (none included), `?` exactly one.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        resource_name = "Example"
        baseline_scope = "mcp"
        rate_per_client = "600/1m"

        [tools]
        "search_*" = { scope = "tools:read", rate = "60/1m" }
        "search_admin" = { scope = "tools:read admin" }
        "delete_*" = { scope = "tools:write" }
        "delete_all*" = { scope = "tools:write admin" }

        [resources]
        "file:///public/*" = { scope = "files:read" }
    "#;

    fn held(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn globs() {
        for (p, t, ok) in [
            ("search_*", "search_docs", true),
            ("search_*", "search_", true),
            ("search_*", "research_docs", false),
            ("*_docs", "search_docs", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("?at", "cat", true),
            ("?at", "at", false),
            ("*", "", true),
            ("", "", true),
            ("exact", "exact", true),
        ] {
            assert_eq!(glob_matches(p, t), ok, "{p} vs {t}");
        }
    }

    #[test]
    fn decisions() {
        let p = Policy::from_toml(POLICY).unwrap();
        let read = held("mcp tools:read");
        assert_eq!(
            p.check(Target::Tool("search_docs"), &read).unwrap().unwrap().rate,
            Some((60, std::time::Duration::from_secs(60)))
        );
        // The exact name wins over the glob.
        assert_eq!(
            p.check(Target::Tool("search_admin"), &read),
            Err(Refusal::InsufficientScope { needed: held("admin mcp tools:read") })
        );
        // The longer glob wins.
        assert_eq!(
            p.check(Target::Tool("delete_all_files"), &held("mcp tools:write")),
            Err(Refusal::InsufficientScope { needed: held("admin mcp tools:write") })
        );
        assert!(p.check(Target::Tool("delete_file"), &held("mcp tools:write")).is_ok());
        // The baseline is needed everywhere.
        assert_eq!(
            p.check(Target::Tool("search_docs"), &held("tools:read")),
            Err(Refusal::InsufficientScope { needed: held("mcp tools:read") })
        );
        assert!(p.check(Target::Other, &held("mcp")).is_ok());
        assert!(p.check(Target::Other, &[]).is_err());
        // Unnamed tools are denied by default; unnamed prompts are not restricted (no [prompts]).
        assert_eq!(
            p.check(Target::Tool("unknown"), &held("mcp tools:read tools:write admin")),
            Err(Refusal::NotAllowed)
        );
        assert!(p.check(Target::Prompt("anything"), &held("mcp")).is_ok());
        assert!(p.check(Target::Resource("file:///public/a.txt"), &held("mcp files:read")).is_ok());
        assert_eq!(p.check(Target::Resource("file:///etc/passwd"), &held("mcp files:read")), Err(Refusal::NotAllowed));
        assert_eq!(p.scopes_supported(), held("admin files:read mcp tools:read tools:write"));
    }

    #[test]
    fn unnamed_allow_and_no_policy() {
        let p = Policy::from_toml("default = \"allow\"\n[tools]\n\"x\" = { scope = \"s\" }").unwrap();
        assert!(p.check(Target::Tool("y"), &[]).is_ok());
        assert!(p.check(Target::Tool("x"), &[]).is_err());
        assert!(Policy::open().check(Target::Tool("anything"), &[]).is_ok());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, needle) in [
            ("[tools]\n\"a\" = { scope = \"s\", rate = \"fast\" }", "\"a\""),
            ("[tools]\n\"a\" = { scopes = \"s\" }", "scopes"),
            ("default = \"maybe\"", "default"),
            ("baseline_scope = \"a\\\"b\"", "baseline_scope"),
            ("nonsense = 1", "nonsense"),
        ] {
            let e = Policy::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
