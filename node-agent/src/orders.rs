//! The DSI's orders to this NUC (`SitePlan::orders`: reset now, roll back, wake), each carried
//! out once: which are new (`to_do`, pure) and the last one done, kept in `DATA/orders_done` so
//! that a restart does not reset the NUC again. The station carries them out
//! (`Station::obey`); the report tells the controller the last one done.

use std::path::Path;

use image_tools::wire::Order;

const FILE: &str = "orders_done";

/// The orders of `orders` for `node` above `done`, oldest first.
pub fn to_do(orders: &[Order], node: &str, done: u64) -> Vec<Order> {
    let mut out: Vec<Order> = orders
        .iter()
        .filter(|o| o.node == node && o.id > done)
        .cloned()
        .collect();
    out.sort_by_key(|o| o.id);
    out
}

/// The last order done, as kept in `data` (0 when none is).
pub fn load(data: &Path) -> u64 {
    std::fs::read_to_string(data.join(FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Keeps `done` in `data` (fsync and rename).
pub fn save(data: &Path, done: u64) -> std::io::Result<()> {
    image_tools::durable::write_file(&data.join(FILE), format!("{done}\n").as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::wire::OrderKind;

    fn o(id: u64, node: &str, kind: OrderKind) -> Order {
        Order {
            id,
            node: node.into(),
            kind,
        }
    }

    #[test]
    fn only_this_nucs_new_orders_are_done_oldest_first() {
        let orders = [
            o(7, "nuc-1", OrderKind::Rollback),
            o(3, "nuc-1", OrderKind::Reset),
            o(5, "nuc-2", OrderKind::Reset),
            o(2, "nuc-1", OrderKind::Wake),
        ];
        let ids = |v: Vec<Order>| v.iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(ids(to_do(&orders, "nuc-1", 0)), [2, 3, 7]);
        assert_eq!(ids(to_do(&orders, "nuc-1", 3)), [7]);
        assert_eq!(ids(to_do(&orders, "nuc-1", 7)), Vec::<u64>::new());
    }

    #[test]
    fn the_last_order_done_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), 0);
        save(dir.path(), 42).unwrap();
        assert_eq!(load(dir.path()), 42);
    }
}
