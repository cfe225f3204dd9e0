//! The node list the PKI issues certificates from, and the Mosquitto ACL generated from it.
//!
//! The file has one node per line: `node,site,region` (the node's id, its site and its
//! region, as in the agent's `[node]` section), or just `node` when the site and region are
//! not known yet. Blank lines, `#` comments and a header line `node,site,region` are
//! skipped; spaces around fields are ignored. The collector's `ingest.allowlist_file`
//! reads the same format (the first field), so one file serves both.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use alarmnet_protocol::{CollectorId, NodeId, Prefix, RegionId, SiteId};

/// One node of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub node: NodeId,
    /// Where the node publishes: `None` when the list gives only its id, and then the ACL
    /// lets it publish under any region and site (still only under its own id).
    pub place: Option<(RegionId, SiteId)>,
}

/// Why a node list cannot be used: every bad line, with its number.
#[derive(Debug, thiserror::Error)]
pub enum NodeListError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid node list:\n  - {}", .problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
}

/// Reads and checks a node list file.
pub fn read_node_list(path: &Path) -> Result<Vec<NodeEntry>, NodeListError> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeListError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_node_list(&text).map_err(|problems| NodeListError::Invalid {
        path: path.display().to_string(),
        problems,
    })
}

/// Parses a node list, collecting every problem (`line N: ...`). An empty list is an error:
/// it is always a wrong file.
pub fn parse_node_list(text: &str) -> Result<Vec<NodeEntry>, Vec<String>> {
    let mut problems = Vec::new();
    let mut nodes = Vec::new();
    let mut first_line: HashMap<NodeId, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        // Ids cannot hold `#`: everything after one is a comment, as in the allowlist.
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields == ["node", "site", "region"] {
            continue;
        }
        let (node, place) = match fields.as_slice() {
            [node] => (NodeId::new(*node), None),
            [node, site, region] => (
                NodeId::new(*node),
                Some((RegionId::new(*region), SiteId::new(*site))),
            ),
            _ => {
                problems.push(format!(
                    "line {n}: expected `node,site,region` or `node`, found {} fields",
                    fields.len()
                ));
                continue;
            }
        };
        let node = match node {
            Ok(node) => node,
            Err(e) => {
                problems.push(format!("line {n}: node: {e}"));
                continue;
            }
        };
        let place = match place {
            None => None,
            Some((Ok(region), Ok(site))) => Some((region, site)),
            Some((region, site)) => {
                if let Err(e) = site {
                    problems.push(format!("line {n}: site: {e}"));
                }
                if let Err(e) = region {
                    problems.push(format!("line {n}: region: {e}"));
                }
                continue;
            }
        };
        if let Some(first) = first_line.get(&node) {
            problems.push(format!(
                "line {n}: node {node} is listed again (first on line {first}); node ids are unique in the network"
            ));
            continue;
        }
        first_line.insert(node.clone(), n);
        nodes.push(NodeEntry { node, place });
    }
    if nodes.is_empty() && problems.is_empty() {
        problems.push("no nodes in the list".into());
    }
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(problems)
    }
}

/// The agent's topics it may publish to (PROTOCOL.md, "Topics").
const AGENT_WRITES: [&str; 5] = ["birth", "state", "hb", "fault", "test"];
/// The agent's topics it may read: its commands, and its own retained state (the stale-Will
/// self-heal rule).
const AGENT_READS: [&str; 2] = ["cmd", "state"];

/// A Mosquitto 2.0 `acl_file` for `nodes` and the `collectors`.
///
/// Design: one `user` block per identity instead of `pattern` lines with `%c`: a pattern
/// can pin a node to its own id but not to its region and site, which only the node list
/// knows. Usernames are the certificate CNs (`use_identity_as_username`), which `pki`
/// issues as the node ids, so the ACL and the certificates come from the same list.
pub fn render_acl(prefix: &Prefix, collectors: &[CollectorId], nodes: &[NodeEntry]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Mosquitto ACL for alarmnet, generated by `alarmnet-collector pki acl`.\n\
         # Regenerate it from the node list instead of editing it. {} nodes, prefix {prefix}.\n\
         # Usernames are certificate CNs (use_identity_as_username true).",
        nodes.len()
    );
    for c in collectors {
        let _ = writeln!(
            out,
            "\n# collector {c}: reads everything; writes its state, alerts and commands\n\
             user {c}\n\
             topic read {prefix}/#\n\
             topic write {prefix}/$collector/{c}/#\n\
             topic write {prefix}/$alerts/#\n\
             topic write {prefix}/+/+/+/cmd"
        );
    }
    for entry in nodes {
        let node = &entry.node;
        let base = match &entry.place {
            Some((region, site)) => format!("{prefix}/{region}/{site}/{node}"),
            None => format!("{prefix}/+/+/{node}"),
        };
        let _ = writeln!(out, "\nuser {node}");
        for t in AGENT_WRITES {
            let _ = writeln!(out, "topic write {base}/{t}");
        }
        for t in AGENT_READS {
            let _ = writeln!(out, "topic read {base}/{t}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_bare_ids_comments_and_a_header() {
        let text = "# Lanzhou\nnode,site,region\n lz-cg-s001 , lz-chengguan , lanzhou \n\nlz-cg-s002 # roof\n";
        let nodes = parse_node_list(text).expect("valid");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].node.as_str(), "lz-cg-s001");
        let (region, site) = nodes[0].place.as_ref().expect("placed");
        assert_eq!(
            (region.as_str(), site.as_str()),
            ("lanzhou", "lz-chengguan")
        );
        assert_eq!(nodes[1].place, None);
    }

    #[test]
    fn every_bad_line_is_reported() {
        let text = "a,b\nbad id,s,r\nn1,s/1,r\nn2,s,r\nn2,s,r\n";
        let problems = parse_node_list(text).expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("line 1: expected"), "{problems:#?}");
        assert!(problems[1].starts_with("line 2: node:"), "{problems:#?}");
        assert!(problems[2].starts_with("line 3: site:"), "{problems:#?}");
        assert!(
            problems[3].starts_with("line 5: node n2 is listed again (first on line 4)"),
            "{problems:#?}"
        );
        assert_eq!(
            parse_node_list("# nothing\n").expect_err("empty"),
            vec!["no nodes in the list"]
        );
    }

    #[test]
    fn acl_pins_each_node_to_its_own_topics() {
        let nodes = parse_node_list("lz-cg-s001,lz-chengguan,lanzhou\nloose-1\n").expect("valid");
        let collectors = [CollectorId::new("alarmnet-collector-1").expect("id")];
        let acl = render_acl(&Prefix::default(), &collectors, &nodes);
        let block = |user: &str| -> Vec<String> {
            acl.split("\n\n")
                .find(|b| b.lines().any(|l| l == format!("user {user}")))
                .unwrap_or_else(|| panic!("no block for {user} in\n{acl}"))
                .lines()
                .filter(|l| l.starts_with("topic "))
                .map(str::to_owned)
                .collect()
        };
        let p = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001";
        assert_eq!(
            block("lz-cg-s001"),
            [
                format!("topic write {p}/birth"),
                format!("topic write {p}/state"),
                format!("topic write {p}/hb"),
                format!("topic write {p}/fault"),
                format!("topic write {p}/test"),
                format!("topic read {p}/cmd"),
                format!("topic read {p}/state"),
            ]
        );
        assert!(block("loose-1").contains(&"topic write alarmnet/v1/+/+/loose-1/hb".to_owned()));
        assert_eq!(
            block("alarmnet-collector-1"),
            [
                "topic read alarmnet/v1/#",
                "topic write alarmnet/v1/$collector/alarmnet-collector-1/#",
                "topic write alarmnet/v1/$alerts/#",
                "topic write alarmnet/v1/+/+/+/cmd",
            ]
        );
        // Nothing applies to anonymous clients or to every user.
        assert!(!acl.lines().any(|l| l.starts_with("pattern ")));
        let before_first_user = acl.split("\nuser ").next().unwrap_or_default();
        assert!(!before_first_user.lines().any(|l| l.starts_with("topic ")));
    }
}
