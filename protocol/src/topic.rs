//! The topic tree: parsed once into [`Topic`], formatted back with [`Topic::format`].
//!
//! ```text
//! {prefix}/{region}/{site}/{node}/{birth|state|hb|fault|test|cmd}
//! {prefix}/$collector/{collector_id}/state
//! {prefix}/$alerts/{region|_}/{site|_}/{node|_}/{rule}
//! ```

use std::fmt;

use crate::ids::{CollectorId, IdError, Name, NodeId, RegionId, SiteId};

/// Why a topic is not one of the protocol's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not start with the configured prefix.
    #[error("topic {topic:?} is not under the prefix {prefix:?}")]
    WrongPrefix { topic: String, prefix: String },
    /// The number of levels or the last level is not one the protocol defines.
    #[error("topic {topic:?} is not a protocol topic: {why}")]
    Shape { topic: String, why: &'static str },
    /// A level holds an identifier that breaks its rule.
    #[error("topic {topic:?}: {source}")]
    Id { topic: String, source: IdError },
}

/// A validated topic prefix, `alarmnet/v1` by default: one or more non-empty levels without
/// wildcards, no leading `$`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// Checks and wraps a prefix. A trailing `/` is removed.
    pub fn new(prefix: impl Into<String>) -> Result<Self, String> {
        let mut p: String = prefix.into();
        if p.ends_with('/') {
            p.pop();
        }
        if p.is_empty() {
            return Err("the topic prefix must not be empty".into());
        }
        if p.starts_with('$') {
            return Err(format!("the topic prefix {p:?} must not start with '$'"));
        }
        if p.split('/').any(|level| level.is_empty()) {
            return Err(format!("the topic prefix {p:?} has an empty level"));
        }
        if p.contains(['+', '#', '\0']) {
            return Err(format!(
                "the topic prefix {p:?} must not contain '+', '#' or NUL"
            ));
        }
        Ok(Self(p))
    }

    /// The prefix as a string slice, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter a collector subscribes to for everything agents publish:
    /// `{prefix}/+/+/+/+` (it also matches `cmd`, which the collector ignores).
    pub fn agents_filter(&self) -> String {
        format!("{}/+/+/+/+", self.0)
    }

    /// The filter for all alert notifications: `{prefix}/$alerts/#`.
    pub fn alerts_filter(&self) -> String {
        format!("{}/$alerts/#", self.0)
    }

    /// The filter for all collectors' states: `{prefix}/$collector/+/state`.
    pub fn collectors_filter(&self) -> String {
        format!("{}/$collector/+/state", self.0)
    }

    /// Parses a topic under this prefix.
    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        Topic::parse(self, topic)
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self(crate::DEFAULT_PREFIX.to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

/// Where a node sits in the network: region → site → node.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct NodePath {
    pub region: RegionId,
    pub site: SiteId,
    pub node: NodeId,
}

impl NodePath {
    pub fn new(region: RegionId, site: SiteId, node: NodeId) -> Self {
        Self { region, site, node }
    }

    /// The topic of this node for one message kind, e.g. `alarmnet/v1/lanzhou/lz-cg/n1/hb`.
    pub fn topic(&self, prefix: &Prefix, kind: NodeTopic) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            prefix.0,
            self.region,
            self.site,
            self.node,
            kind.leaf()
        )
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.site, self.node)
    }
}

/// The last level of a node's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeTopic {
    Birth,
    State,
    Heartbeat,
    Fault,
    Test,
    Command,
}

impl NodeTopic {
    /// All node topic kinds.
    pub const ALL: [NodeTopic; 6] = [
        NodeTopic::Birth,
        NodeTopic::State,
        NodeTopic::Heartbeat,
        NodeTopic::Fault,
        NodeTopic::Test,
        NodeTopic::Command,
    ];

    /// The topic level: `birth`, `state`, `hb`, `fault`, `test` or `cmd`.
    pub fn leaf(self) -> &'static str {
        match self {
            NodeTopic::Birth => "birth",
            NodeTopic::State => "state",
            NodeTopic::Heartbeat => "hb",
            NodeTopic::Fault => "fault",
            NodeTopic::Test => "test",
            NodeTopic::Command => "cmd",
        }
    }

    fn from_leaf(leaf: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.leaf() == leaf)
    }

    /// Whether the message is published retained.
    pub fn retained(self) -> bool {
        matches!(self, NodeTopic::Birth | NodeTopic::State)
    }
}

/// The subject of an alert topic. `None` levels are written `_`: a site alert has no node, a
/// region alert no site and no node, a network-wide alert (such as `collector_blind`) no
/// region either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertTopic {
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
    pub rule: Name,
}

/// A parsed protocol topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `{prefix}/{region}/{site}/{node}/{kind}`
    Node(NodePath, NodeTopic),
    /// `{prefix}/$collector/{collector_id}/state`
    CollectorState(CollectorId),
    /// `{prefix}/$alerts/{region}/{site}/{subject}/{rule}`
    Alert(AlertTopic),
}

const WILDCARD: &str = "_";

fn opt_level<T>(
    level: &str,
    parse: impl FnOnce(&str) -> Result<T, IdError>,
) -> Result<Option<T>, IdError> {
    if level == WILDCARD {
        Ok(None)
    } else {
        parse(level).map(Some)
    }
}

fn opt_str<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| WILDCARD.to_owned(), T::to_string)
}

impl Topic {
    /// Parses `topic` under `prefix`.
    pub fn parse(prefix: &Prefix, topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::WrongPrefix {
                topic: topic.into(),
                prefix: prefix.0.clone(),
            })?;
        let levels: Vec<&str> = rest.split('/').collect();
        let shape = |why| TopicError::Shape {
            topic: topic.into(),
            why,
        };
        let id = |source| TopicError::Id {
            topic: topic.into(),
            source,
        };
        match levels.as_slice() {
            ["$collector", collector, "state"] => Ok(Topic::CollectorState(
                CollectorId::new(*collector).map_err(id)?,
            )),
            ["$collector", ..] => Err(shape(
                "a collector topic is $collector/{collector_id}/state",
            )),
            ["$alerts", region, site, node, rule] => {
                let region = opt_level(region, |s| RegionId::new(s)).map_err(id)?;
                let site = opt_level(site, |s| SiteId::new(s)).map_err(id)?;
                let node = opt_level(node, |s| NodeId::new(s)).map_err(id)?;
                let rule = Name::new(*rule).map_err(id)?;
                if node.is_some() && site.is_none() || site.is_some() && region.is_none() {
                    return Err(shape(
                        "an alert topic names a node only with its site, a site only with its region",
                    ));
                }
                Ok(Topic::Alert(AlertTopic {
                    region,
                    site,
                    node,
                    rule,
                }))
            }
            ["$alerts", ..] => Err(shape(
                "an alert topic is $alerts/{region}/{site}/{subject}/{rule}",
            )),
            [region, site, node, leaf] => {
                let kind = NodeTopic::from_leaf(leaf).ok_or_else(|| {
                    shape("the last level must be birth, state, hb, fault, test or cmd")
                })?;
                let path = NodePath {
                    region: RegionId::new(*region).map_err(id)?,
                    site: SiteId::new(*site).map_err(id)?,
                    node: NodeId::new(*node).map_err(id)?,
                };
                Ok(Topic::Node(path, kind))
            }
            _ => Err(shape(
                "a node topic has four levels after the prefix: region/site/node/kind",
            )),
        }
    }

    /// The full topic string under `prefix`.
    pub fn format(&self, prefix: &Prefix) -> String {
        match self {
            Topic::Node(path, kind) => path.topic(prefix, *kind),
            Topic::CollectorState(id) => format!("{}/$collector/{id}/state", prefix.0),
            Topic::Alert(a) => format!(
                "{}/$alerts/{}/{}/{}/{}",
                prefix.0,
                opt_str(&a.region),
                opt_str(&a.site),
                opt_str(&a.node),
                a.rule
            ),
        }
    }

    /// Whether messages on this topic are published retained.
    pub fn retained(&self) -> bool {
        match self {
            Topic::Node(_, kind) => kind.retained(),
            Topic::CollectorState(_) | Topic::Alert(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Prefix {
        Prefix::default()
    }

    #[test]
    fn node_topics_round_trip() {
        for kind in NodeTopic::ALL {
            let t = format!(
                "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/{}",
                kind.leaf()
            );
            let parsed = p().parse(&t).expect("valid topic");
            assert_eq!(
                parsed,
                Topic::Node(
                    NodePath::new(
                        RegionId::new("lanzhou").expect("id"),
                        SiteId::new("lz-chengguan").expect("id"),
                        NodeId::new("lz-cg-s001").expect("id"),
                    ),
                    kind
                )
            );
            assert_eq!(parsed.format(&p()), t);
        }
    }

    #[test]
    fn collector_and_alert_topics_round_trip() {
        for t in [
            "alarmnet/v1/$collector/alarmnet-collector-1/state",
            "alarmnet/v1/$alerts/lanzhou/lz-chengguan/lz-cg-s001/node_offline",
            "alarmnet/v1/$alerts/lanzhou/lz-chengguan/_/site_outage",
            "alarmnet/v1/$alerts/lanzhou/_/_/region_outage",
            "alarmnet/v1/$alerts/_/_/_/collector_blind",
        ] {
            assert_eq!(p().parse(t).expect(t).format(&p()), t);
        }
    }

    #[test]
    fn bad_topics_are_rejected_with_a_cause() {
        let cases = [
            ("other/v1/a/b/c/hb", "not under the prefix"),
            ("alarmnet/v1a/b/c/hb", "not under the prefix"),
            ("alarmnet/v1/a/b/c/heartbeat", "last level"),
            ("alarmnet/v1/a/b/hb", "four levels"),
            ("alarmnet/v1/a/b/c/d/hb", "four levels"),
            ("alarmnet/v1/a/b c/n/hb", "site id"),
            ("alarmnet/v1/a/b/n.1/hb", "node id"),
            ("alarmnet/v1/a//n/hb", "site id"),
            ("alarmnet/v1/$collector/c1/online", "collector topic"),
            ("alarmnet/v1/$alerts/_/s/n/r", "alert topic names"),
            ("alarmnet/v1/$alerts/a/b/c", "alert topic is"),
        ];
        for (topic, needle) in cases {
            let err = p().parse(topic).expect_err(topic).to_string();
            assert!(err.contains(needle), "{topic}: {err}");
        }
    }

    #[test]
    fn prefixes_are_validated() {
        assert_eq!(
            Prefix::new("site/alarm/").expect("ok").as_str(),
            "site/alarm"
        );
        for bad in ["", "/", "a//b", "a/+/b", "#", "$SYS"] {
            assert!(Prefix::new(bad).is_err(), "{bad}");
        }
        assert_eq!(p().agents_filter(), "alarmnet/v1/+/+/+/+");
    }
}
