//! berth's own access policy: who may pull, push and delete which repositories, for users
//! authenticated by htpasswd (or nobody at all, for anonymous rules).
//!
//! ```yaml
//! auth:
//!   policy:
//!     admins: [alice, ops]          # users or groups with every right on every repository
//!     groups: {team-a: [bob, carol]}
//!     rules:
//!       - repositories: ["team-a/**"]
//!         groups: [team-a]
//!         actions: [pull, push]
//!       - repositories: ["public/**"]
//!         anonymous: true
//!         actions: [pull]
//! ```
//!
//! A rule grants its `actions` on the repositories matching any of its patterns to the users
//! it names: `users`, members of `groups`, every authenticated user (`authenticated: true`)
//! and/or everyone, even callers without credentials (`anonymous: true`). Rights add up over rules; nothing
//! is granted that no rule grants, and push does not imply pull (list both: docker and
//! podman pull-check every blob they push). Patterns: `*` matches within one path component,
//! `**` across components (`team-a/**` is every repository under `team-a/`), `?` one
//! character other than `/`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::Action;

/// The `auth.policy` section as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Users or groups with every right on every repository.
    pub admins: Vec<String>,
    /// Group name → member user names.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The rules, in any order (rights add up).
    pub rules: Vec<RuleConfig>,
}

/// One rule of the policy.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Repository name patterns.
    pub repositories: Vec<String>,
    /// User names the rule applies to.
    pub users: Vec<String>,
    /// Groups whose members the rule applies to.
    pub groups: Vec<String>,
    /// The rule applies to every authenticated user.
    pub authenticated: bool,
    /// The rule applies to callers without credentials.
    pub anonymous: bool,
    /// `pull`, `push`, `delete` (or `*` for all three).
    pub actions: Vec<String>,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    admins: BTreeSet<String>,
    /// user → groups
    memberships: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    patterns: Vec<String>,
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    authenticated: bool,
    anonymous: bool,
    actions: Vec<Action>,
}

impl Policy {
    /// Checks and compiles a policy; errors name the offending rule.
    pub fn new(config: &PolicyConfig) -> Result<Policy, String> {
        let mut memberships: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (group, members) in &config.groups {
            for m in members {
                memberships
                    .entry(m.clone())
                    .or_default()
                    .insert(group.clone());
            }
        }
        let mut rules = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            let at = format!("auth.policy.rules[{i}]");
            if r.repositories.is_empty() {
                return Err(format!("{at}: repositories is empty"));
            }
            for p in &r.repositories {
                if p.is_empty() || p.contains("***") {
                    return Err(format!("{at}: invalid repository pattern {p:?}"));
                }
            }
            for g in &r.groups {
                if !config.groups.contains_key(g) {
                    return Err(format!(
                        "{at}: group {g:?} is not defined in auth.policy.groups"
                    ));
                }
            }
            if r.users.is_empty() && r.groups.is_empty() && !r.authenticated && !r.anonymous {
                return Err(format!(
                    "{at}: applies to nobody (give users, groups, authenticated or anonymous)"
                ));
            }
            let mut actions = Vec::new();
            for a in &r.actions {
                match a.as_str() {
                    "*" => actions.extend([Action::Pull, Action::Push, Action::Delete]),
                    other => actions.push(Action::parse(other).ok_or_else(|| {
                        format!("{at}: action {other:?} is not pull, push, delete or *")
                    })?),
                }
            }
            if actions.is_empty() {
                return Err(format!("{at}: actions is empty"));
            }
            rules.push(Rule {
                patterns: r.repositories.clone(),
                users: r.users.iter().cloned().collect(),
                groups: r.groups.iter().cloned().collect(),
                authenticated: r.authenticated,
                anonymous: r.anonymous,
                actions,
            });
        }
        Ok(Policy {
            admins: config.admins.iter().cloned().collect(),
            memberships,
            rules,
        })
    }

    fn groups_of(&self, user: &str) -> Option<&BTreeSet<String>> {
        self.memberships.get(user)
    }

    /// Whether `user` (None: anonymous) is an admin.
    pub fn is_admin(&self, user: Option<&str>) -> bool {
        let Some(user) = user else { return false };
        self.admins.contains(user)
            || self
                .groups_of(user)
                .is_some_and(|gs| gs.iter().any(|g| self.admins.contains(g)))
    }

    /// Whether `user` (None: anonymous) may do `action` on `repository`.
    pub fn allows(&self, user: Option<&str>, repository: &str, action: Action) -> bool {
        if self.is_admin(user) {
            return true;
        }
        let groups = user.and_then(|u| self.groups_of(u));
        self.rules.iter().any(|r| {
            let applies = match user {
                None => r.anonymous,
                Some(u) => {
                    r.anonymous
                        || r.authenticated
                        || r.users.contains(u)
                        || groups.is_some_and(|gs| gs.iter().any(|g| r.groups.contains(g)))
                }
            };
            applies && r.actions.contains(&action) && r.patterns.iter().any(|p| glob(p, repository))
        })
    }

    /// Whether any rule lets anonymous callers do anything (so a 401 is not automatic).
    pub fn has_anonymous_rules(&self) -> bool {
        self.rules.iter().any(|r| r.anonymous)
    }
}

/// Matches `name` against `pattern`: `**` any run of characters, `*` any run without `/`,
/// `?` one character other than `/`, anything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    // Memoised recursion over (pattern index, name index): patterns are short.
    let mut memo = vec![None; (p.len() + 1) * (n.len() + 1)];
    glob_at(p, n, 0, 0, &mut memo)
}

fn glob_at(p: &[u8], n: &[u8], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
    let key = i * (n.len() + 1) + j;
    if let Some(v) = memo[key] {
        return v;
    }
    let v = if i == p.len() {
        j == n.len()
    } else if p[i] == b'*' {
        let double = p.get(i + 1) == Some(&b'*');
        let next = if double { i + 2 } else { i + 1 };
        // Zero characters, or one more (not `/` for a single star).
        glob_at(p, n, next, j, memo)
            || (j < n.len() && (double || n[j] != b'/') && glob_at(p, n, i, j + 1, memo))
    } else if j < n.len() && (p[i] == n[j] || (p[i] == b'?' && n[j] != b'/')) {
        glob_at(p, n, i + 1, j + 1, memo)
    } else {
        false
    };
    memo[key] = Some(v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("team-a/**", "team-a/x"));
        assert!(glob("team-a/**", "team-a/x/y"));
        assert!(!glob("team-a/**", "team-a"));
        assert!(!glob("team-a/**", "team-ab/x"));
        assert!(glob("team-a/*", "team-a/x"));
        assert!(!glob("team-a/*", "team-a/x/y"));
        assert!(glob("**", "a/b/c"));
        assert!(glob("*", "a"));
        assert!(!glob("*", "a/b"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "a/c"));
        assert!(glob("library/ubuntu", "library/ubuntu"));
        assert!(!glob("library/ubuntu", "library/ubuntu2"));
        assert!(glob("**/cache", "a/b/cache"));
        assert!(glob("*-dev/**", "x-dev/y"));
    }

    fn policy(yaml: &str) -> Policy {
        let c: PolicyConfig = serde_json::from_str(yaml).unwrap();
        Policy::new(&c).unwrap()
    }

    #[test]
    fn rights_add_up_and_nothing_else_is_granted() {
        let p = policy(
            r#"{"admins":["alice","ops"],"groups":{"team-a":["bob","carol"],"ops":["olga"]},
            "rules":[{"repositories":["team-a/**"],"groups":["team-a"],"actions":["pull","push"]},
                     {"repositories":["team-a/tools"],"users":["dave"],"actions":["pull"]},
                     {"repositories":["public/**"],"anonymous":true,"actions":["pull"]},
                     {"repositories":["shared/*"],"authenticated":true,"actions":["*"]}]}"#,
        );
        use Action::*;
        assert!(p.allows(Some("alice"), "anything/at/all", Delete));
        assert!(p.allows(Some("olga"), "x", Delete), "admin through a group");
        assert!(p.allows(Some("bob"), "team-a/app", Push));
        assert!(p.allows(Some("bob"), "team-a/app", Pull));
        assert!(!p.allows(Some("bob"), "team-a/app", Delete));
        assert!(!p.allows(Some("bob"), "team-b/app", Pull));
        assert!(p.allows(Some("dave"), "team-a/tools", Pull));
        assert!(!p.allows(Some("dave"), "team-a/tools", Push));
        assert!(!p.allows(Some("dave"), "team-a/app", Pull));
        assert!(p.allows(None, "public/x", Pull));
        assert!(!p.allows(None, "public/x", Push));
        assert!(
            p.allows(Some("dave"), "public/x", Pull),
            "what anyone may, users may"
        );
        assert!(p.allows(Some("zed"), "shared/x", Delete));
        assert!(!p.allows(None, "shared/x", Pull));
        assert!(p.has_anonymous_rules());
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            r#"{"rules":[{"repositories":[],"users":["a"],"actions":["pull"]}]}"#,
            r#"{"rules":[{"repositories":["a"],"users":["a"],"actions":[]}]}"#,
            r#"{"rules":[{"repositories":["a"],"users":["a"],"actions":["write"]}]}"#,
            r#"{"rules":[{"repositories":["a"],"actions":["pull"]}]}"#,
            r#"{"rules":[{"repositories":["a"],"groups":["nope"],"actions":["pull"]}]}"#,
        ] {
            let c: PolicyConfig = serde_json::from_str(bad).unwrap();
            assert!(Policy::new(&c).is_err(), "{bad}");
        }
    }
}
