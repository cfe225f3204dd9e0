//! List cursors: the key of a page's last item, opaque to clients.
//!
//! A cursor is a letter naming the list it belongs to followed by the hex of the key's
//! fields joined by newlines (no field holds one: ids are `[A-Za-z0-9_-]`, the others are
//! numbers). Keyset pagination: the next page is the items after that key in the list's
//! order, so items inserted between two requests neither shift nor repeat the pages.

use alarmnet_protocol::{NodeId, RegionId, SiteId};

use super::Params;
use super::error::ApiResult;
use crate::store::{NodeKey, SilenceKey, TimeKey};

/// A list key that a cursor can carry.
pub(super) trait CursorKey: Sized {
    fn fields(&self) -> Vec<String>;
    fn from_fields(fields: &[&str]) -> Option<Self>;
}

impl CursorKey for NodeKey {
    fn fields(&self) -> Vec<String> {
        vec![
            self.region.as_str().to_owned(),
            self.site.as_str().to_owned(),
            self.node.as_str().to_owned(),
        ]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        let [region, site, node] = fields else {
            return None;
        };
        Some(NodeKey {
            region: RegionId::new(*region).ok()?,
            site: SiteId::new(*site).ok()?,
            node: NodeId::new(*node).ok()?,
        })
    }
}

impl CursorKey for TimeKey {
    fn fields(&self) -> Vec<String> {
        vec![self.at.to_string(), self.id.to_string()]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        let [at, id] = fields else {
            return None;
        };
        Some(TimeKey {
            at: at.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl CursorKey for SilenceKey {
    fn fields(&self) -> Vec<String> {
        vec![self.starts_at.to_string(), self.id.to_string()]
    }

    fn from_fields(fields: &[&str]) -> Option<Self> {
        let [starts_at, id] = fields else {
            return None;
        };
        let starts_at = starts_at.parse().ok()?;
        Some(SilenceKey {
            starts_at,
            id: id.parse().ok()?,
        })
    }
}

/// The cursor of `key` in the list named `list`.
pub(super) fn encode<K: CursorKey>(list: char, key: &K) -> String {
    let mut out = String::from(list);
    for b in key.fields().join("\n").bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The key in `cursor`, if it is a cursor of the list named `list`.
fn decode<K: CursorKey>(list: char, cursor: &str) -> Option<K> {
    let hex = cursor.strip_prefix(list)?;
    if hex.len() % 2 != 0 || hex.len() > 1024 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let fields: Vec<&str> = text.split('\n').collect();
    K::from_fields(&fields)
}

/// The `cursor` parameter of the list named `list`; a cursor that is not one is a 400.
pub(super) fn param<K: CursorKey>(p: &Params, list: char) -> ApiResult<Option<K>> {
    p.parse(
        "cursor",
        "expected the next_cursor of a previous page of this list",
        |v| decode(list, v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SilenceId;
    use crate::model::UnixMillis;

    #[test]
    fn keys_round_trip_and_other_lists_cursors_are_refused() {
        let key = NodeKey {
            region: RegionId::new("lanzhou").expect("id"),
            site: SiteId::new("lz-cg").expect("id"),
            node: NodeId::new("lz-cg-s001").expect("id"),
        };
        let c = encode('n', &key);
        assert_eq!(decode::<NodeKey>('n', &c), Some(key));
        assert_eq!(decode::<NodeKey>('a', &c), None);
        let t = TimeKey {
            at: UnixMillis::from_millis(1_790_000_000_000),
            id: 42,
        };
        assert_eq!(decode::<TimeKey>('a', &encode('a', &t)), Some(t));
        let s = SilenceKey {
            starts_at: UnixMillis::from_millis(7),
            id: SilenceId::new(0x0123_abcd),
        };
        assert_eq!(decode::<SilenceKey>('s', &encode('s', &s)), Some(s));
        for bad in ["", "n", "nzz", "n6", "o100", "n6c", "a31"] {
            assert_eq!(decode::<NodeKey>('n', bad), None, "{bad}");
            assert_eq!(decode::<TimeKey>('a', bad), None, "{bad}");
        }
    }
}
