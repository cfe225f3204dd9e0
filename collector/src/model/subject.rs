//! What an alert is about: the whole network, a region, a site of a region, or a node of a
//! site. Each level names every level above it, so a node without a region cannot be built.

use std::cmp::Ordering;

use alarmnet_protocol::{NodeId, RegionId, SiteId};
use serde::{Deserialize, Serialize};

/// The subject of an alert: a node, a site, a region, or the whole network.
///
/// On every wire and in the store it is three optional labels, `{"region", "site",
/// "node"}`, each `null` when the subject is above that level (see [`SubjectLabels`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "SubjectLabels", try_from = "SubjectLabels")]
pub enum Subject {
    Network,
    Region {
        region: RegionId,
    },
    Site {
        region: RegionId,
        site: SiteId,
    },
    Node {
        region: RegionId,
        site: SiteId,
        node: NodeId,
    },
}

impl Subject {
    pub fn region(&self) -> Option<&RegionId> {
        match self {
            Subject::Network => None,
            Subject::Region { region }
            | Subject::Site { region, .. }
            | Subject::Node { region, .. } => Some(region),
        }
    }

    pub fn site(&self) -> Option<&SiteId> {
        match self {
            Subject::Network | Subject::Region { .. } => None,
            Subject::Site { site, .. } | Subject::Node { site, .. } => Some(site),
        }
    }

    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Subject::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The subject with these labels; `None` when a lower level is given without the one
    /// above it (a site without a region, a node without a site).
    pub fn from_labels(
        region: Option<RegionId>,
        site: Option<SiteId>,
        node: Option<NodeId>,
    ) -> Option<Subject> {
        match (region, site, node) {
            (None, None, None) => Some(Subject::Network),
            (Some(region), None, None) => Some(Subject::Region { region }),
            (Some(region), Some(site), None) => Some(Subject::Site { region, site }),
            (Some(region), Some(site), Some(node)) => Some(Subject::Node { region, site, node }),
            _ => None,
        }
    }

    fn labels(&self) -> (Option<&RegionId>, Option<&SiteId>, Option<&NodeId>) {
        (self.region(), self.site(), self.node())
    }
}

/// Ordered as its labels are (the order the three-label form had): by region, then site,
/// then node, an absent label first.
impl Ord for Subject {
    fn cmp(&self, other: &Self) -> Ordering {
        self.labels().cmp(&other.labels())
    }
}

impl PartialOrd for Subject {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The serialized form of a [`Subject`]: every label, `null` when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectLabels {
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
}

impl From<Subject> for SubjectLabels {
    fn from(s: Subject) -> Self {
        match s {
            Subject::Network => SubjectLabels {
                region: None,
                site: None,
                node: None,
            },
            Subject::Region { region } => SubjectLabels {
                region: Some(region),
                site: None,
                node: None,
            },
            Subject::Site { region, site } => SubjectLabels {
                region: Some(region),
                site: Some(site),
                node: None,
            },
            Subject::Node { region, site, node } => SubjectLabels {
                region: Some(region),
                site: Some(site),
                node: Some(node),
            },
        }
    }
}

/// Labels that name a level without the one above it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an alert subject names a site only within a region and a node only within a site")]
pub struct SubjectError;

impl TryFrom<SubjectLabels> for Subject {
    type Error = SubjectError;
    fn try_from(l: SubjectLabels) -> Result<Self, SubjectError> {
        Subject::from_labels(l.region, l.site, l.node).ok_or(SubjectError)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node() -> Subject {
        Subject::Node {
            region: RegionId::new("lanzhou").expect("id"),
            site: SiteId::new("cg").expect("id"),
            node: NodeId::new("s1").expect("id"),
        }
    }

    #[test]
    fn every_subject_serializes_as_three_labels() {
        let region = RegionId::new("lanzhou").expect("id");
        let site = SiteId::new("cg").expect("id");
        let cases = [
            (
                Subject::Network,
                json!({"region": null, "site": null, "node": null}),
            ),
            (
                Subject::Region {
                    region: region.clone(),
                },
                json!({"region": "lanzhou", "site": null, "node": null}),
            ),
            (
                Subject::Site { region, site },
                json!({"region": "lanzhou", "site": "cg", "node": null}),
            ),
            (
                node(),
                json!({"region": "lanzhou", "site": "cg", "node": "s1"}),
            ),
        ];
        for (subject, labels) in cases {
            assert_eq!(serde_json::to_value(&subject).expect("json"), labels);
            // Field order as the struct of three labels wrote it.
            let text = serde_json::to_string(&subject).expect("json");
            assert!(text.starts_with("{\"region\":"), "{text}");
            assert!(text.contains(",\"site\":") && text.ends_with('}'), "{text}");
            assert!(text.find("\"site\"") < text.find("\"node\""), "{text}");
            assert_eq!(
                serde_json::from_value::<Subject>(labels).expect("subject"),
                subject
            );
        }
    }

    #[test]
    fn a_level_without_the_one_above_is_refused() {
        for labels in [
            json!({"region": null, "site": "cg", "node": null}),
            json!({"region": null, "site": null, "node": "s1"}),
            json!({"region": "lanzhou", "site": null, "node": "s1"}),
        ] {
            assert!(
                serde_json::from_value::<Subject>(labels.clone()).is_err(),
                "{labels}"
            );
        }
    }

    #[test]
    fn subjects_order_by_their_labels() {
        let region = Subject::Region {
            region: RegionId::new("lanzhou").expect("id"),
        };
        let site = Subject::Site {
            region: RegionId::new("lanzhou").expect("id"),
            site: SiteId::new("cg").expect("id"),
        };
        let other = Subject::Region {
            region: RegionId::new("zz").expect("id"),
        };
        let mut all = vec![
            other.clone(),
            node(),
            site.clone(),
            region.clone(),
            Subject::Network,
        ];
        all.sort();
        assert_eq!(all, [Subject::Network, region, site, node(), other]);
    }
}
