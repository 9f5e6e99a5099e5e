//! The DSI's orders to NUCs (reset now, roll back, wake): recorded here, carried to the site in
//! its plan for `ORDER_KEPT_SECS` (`catalog`), carried out by the relay (wake) and the agent (each
//! once: it reports the last id it did).

use std::str::FromStr;

use rusqlite::{params, TransactionBehavior};

use image_tools::wire::{Order, OrderKind};

use super::{Db, DbError};

/// How long an order stays in its site's plan: a NUC that is off all day still takes it in the
/// evening, one reinstalled a week later does not replay it.
pub const ORDER_KEPT_SECS: i64 = 24 * 3600;

/// One order as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: u64,
    pub site: String,
    pub node: String,
    pub kind: OrderKind,
    /// `admin` (the API's token) or the console user's name.
    pub asked_by: String,
    pub asked_at: i64,
}

impl OrderRow {
    pub fn to_wire(&self) -> Order {
        Order {
            id: self.id,
            node: self.node.clone(),
            kind: self.kind,
        }
    }
}

impl Db {
    /// Records `kind` for agent `node` (an enrolled NUC, not a relay), asked by `by` at `now`.
    pub fn order_node(
        &mut self,
        node: &str,
        kind: OrderKind,
        by: &str,
        now: i64,
    ) -> Result<OrderRow, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let site: Option<String> = tx
            .query_row(
                "SELECT site FROM nodes WHERE node = ?1 AND role = 'agent'",
                params![node],
                |r| r.get(0),
            )
            .ok();
        let Some(site) = site else {
            return Err(DbError::Invalid(format!(
                "{node} is not an enrolled NUC (see `nightcast fleet`): only a NUC can be reset, rolled back or woken"
            )));
        };
        tx.execute(
            "INSERT INTO node_orders (site, node, kind, asked_by, asked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![site, node, kind.as_str(), by, now],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(OrderRow {
            id,
            site,
            node: node.to_owned(),
            kind,
            asked_by: by.to_owned(),
            asked_at: now,
        })
    }

    /// The orders asked at `since` or later, oldest first.
    pub fn orders_since(&self, since: i64) -> Result<Vec<OrderRow>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, site, node, kind, asked_by, asked_at FROM node_orders
             WHERE asked_at >= ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            let kind: String = r.get(3)?;
            Ok(OrderRow {
                id: r.get::<_, i64>(0)? as u64,
                site: r.get(1)?,
                node: r.get(2)?,
                kind: OrderKind::from_str(&kind).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                asked_by: r.get(4)?,
                asked_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_for_an_enrolled_nuc_and_ids_grow() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .unwrap();
        db.conn
            .execute_batch(
                "INSERT INTO nodes (site, node, role, enrolled_at) VALUES
                 ('lyon', 'nuc-1', 'agent', 0), ('lyon', 'relay-1', 'relay', 0);",
            )
            .unwrap();
        assert!(matches!(
            db.order_node("relay-1", OrderKind::Reset, "dsi", 10),
            Err(DbError::Invalid(_))
        ));
        assert!(db.order_node("nobody", OrderKind::Wake, "dsi", 10).is_err());
        let a = db.order_node("nuc-1", OrderKind::Reset, "dsi", 10).unwrap();
        let b = db
            .order_node("nuc-1", OrderKind::Rollback, "admin", 20)
            .unwrap();
        assert!(b.id > a.id);
        assert_eq!(a.site, "lyon");
        assert_eq!(db.orders_since(0).unwrap(), vec![a, b.clone()]);
        assert_eq!(db.orders_since(15).unwrap(), vec![b]);
    }
}
