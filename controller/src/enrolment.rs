//! Who gets a certificate: the DSI decides, this module applies the rules. Pure: the catalogue
//! gathers the [`Facts`] of one request inside a transaction (`db::Db::decide_enrolment`), this
//! decides, the transaction records the outcome.
//!
//! The rules, in order:
//! - A token that is unknown, used, expired, or for another role is refused (and used up); a token
//!   for another site than the relay that passed the request on is refused.
//! - A renewal is issued to an enrolled, unrevoked node for its own role and site, nothing else.
//! - A node id that exists keeps its role and site for ever: a request that names it for another
//!   role or site is refused, whoever asks. A revoked node is refused until the DSI removes it.
//! - A node that exists (a re-imaged NUC, or someone posing as it) needs a token or the DSI's
//!   approval of the request's key.
//! - A new node gets its certificate with a token, with the DSI's approval of the request's key,
//!   or while its site is open for new NUCs (`nightcast site accept-new`); otherwise it is pending,
//!   and shows up in `nightcast fleet` with its hardware id and MAC.

use image_tools::exchange::{EnrolAsk, Via};
use image_tools::ids::SiteId;
use image_tools::wire::Role;

/// A node id as the catalogue knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub site: String,
    pub role: Role,
    pub revoked: bool,
}

/// What a token turned out to be when it was redeemed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid { role: Role, site: String },
    Refused(&'static str),
}

/// Everything the decision needs, read in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The node id's row, at any site.
    pub node: Option<Known>,
    pub token: Option<TokenCheck>,
    /// The DSI approved a pending request of this node for this very key.
    pub approved: bool,
    /// Until when the site is open for new NUCs.
    pub site_open_until: Option<i64>,
}

/// What the controller does with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Issue {
        site: SiteId,
    },
    /// Recorded as pending at this site until the DSI lets it in.
    Pending {
        site: SiteId,
        why: String,
    },
    Refuse(String),
}

/// The site a request is for: its relay's, its own (a renewal), or its token's.
pub fn site_of(ask: &EnrolAsk, token: Option<&TokenCheck>) -> Result<SiteId, String> {
    match (&ask.via, token) {
        (Via::Relay(relay), _) => Ok(relay.site.clone()),
        (Via::Itself(me), _) => Ok(me.site.clone()),
        (Via::Direct, Some(TokenCheck::Valid { site, .. })) => {
            SiteId::new(site).map_err(|e| e.to_string())
        }
        (Via::Direct, Some(TokenCheck::Refused(why))) => Err(format!("token refused: {why}")),
        (Via::Direct, None) => Err(
            "a node without a certificate enrols with a token (`nightcast enroll`), or through its site's relay"
                .into(),
        ),
    }
}

/// Decides on `ask` for `site` (from [`site_of`]) at `now`.
pub fn decide(ask: &EnrolAsk, site: &SiteId, facts: &Facts, now: i64) -> Outcome {
    let node = &ask.node;
    let token = match &facts.token {
        Some(TokenCheck::Refused(why)) => return Outcome::Refuse(format!("token refused: {why}")),
        Some(TokenCheck::Valid { role, .. }) if *role != ask.role => {
            return Outcome::Refuse(format!("token refused: it was issued for a {role}"))
        }
        Some(TokenCheck::Valid { site: s, .. }) if s != site.as_str() => {
            return Outcome::Refuse(format!(
                "token refused: it was issued for site {s}, not {site}"
            ))
        }
        Some(TokenCheck::Valid { .. }) => true,
        None => false,
    };
    if let Some(known) = &facts.node {
        if known.role != ask.role || known.site != site.as_str() {
            return Outcome::Refuse(format!(
                "node id {node} is already a {} of site {}: it cannot be enrolled as a {} of {site} (re-imaging a known NUC is a DSI action: `nightcast node rm {node}` first)",
                known.role, known.site, ask.role
            ));
        }
        if known.revoked {
            return Outcome::Refuse(format!(
                "{node} is revoked: `nightcast node rm {node}` lets it enrol again as a new NUC"
            ));
        }
    }
    if ask.renewal {
        return match (&facts.node, &ask.via) {
            (Some(_), Via::Itself(_) | Via::Relay(_)) => Outcome::Issue { site: site.clone() },
            _ => Outcome::Refuse(format!("{node} is not enrolled: nothing to renew")),
        };
    }
    if token || facts.approved {
        return Outcome::Issue { site: site.clone() };
    }
    match &facts.node {
        Some(_) => Outcome::Pending {
            site: site.clone(),
            why: format!(
                "{node} is already enrolled at {site}: enrolling it again (a re-imaged NUC?) needs the DSI: `nightcast node approve {node}`"
            ),
        },
        None if facts.site_open_until.is_some_and(|until| until > now) => {
            Outcome::Issue { site: site.clone() }
        }
        None => Outcome::Pending {
            site: site.clone(),
            why: format!(
                "new {} {node} waits for the DSI: `nightcast node approve {node}`, or `nightcast site accept-new {site} --for 2h`",
                ask.role
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_tools::ids::NodeId;
    use image_tools::trust::Identity;

    const NOW: i64 = 1_796_164_200;

    fn relay(site: &str) -> Via {
        Via::Relay(Identity {
            role: Role::Relay,
            site: SiteId::new(site).unwrap(),
            node: NodeId::new("relay-1").unwrap(),
        })
    }

    fn ask(role: Role, node: &str, via: Via) -> EnrolAsk {
        EnrolAsk {
            token: None,
            role,
            node: NodeId::new(node).unwrap(),
            public_key: vec![4; 65],
            mac: "02:00:00:00:00:01".into(),
            renewal: false,
            via,
        }
    }

    fn lyon() -> SiteId {
        SiteId::new("lyon").unwrap()
    }

    fn known(role: Role, site: &str) -> Option<Known> {
        Some(Known {
            site: site.into(),
            role,
            revoked: false,
        })
    }

    #[test]
    fn a_stranger_without_a_token_is_pending_not_enrolled() {
        let out = decide(
            &ask(Role::Agent, "nuc-9", relay("lyon")),
            &lyon(),
            &Facts::default(),
            NOW,
        );
        assert!(matches!(out, Outcome::Pending { .. }), "{out:?}");
    }

    #[test]
    fn the_dsi_lets_new_nucs_in_by_approval_opening_or_token() {
        let a = ask(Role::Agent, "nuc-9", relay("lyon"));
        let approved = Facts {
            approved: true,
            ..Facts::default()
        };
        assert_eq!(
            decide(&a, &lyon(), &approved, NOW),
            Outcome::Issue { site: lyon() }
        );
        let open = Facts {
            site_open_until: Some(NOW + 60),
            ..Facts::default()
        };
        assert_eq!(
            decide(&a, &lyon(), &open, NOW),
            Outcome::Issue { site: lyon() }
        );
        let closed = Facts {
            site_open_until: Some(NOW),
            ..Facts::default()
        };
        assert!(matches!(
            decide(&a, &lyon(), &closed, NOW),
            Outcome::Pending { .. }
        ));
        let token = Facts {
            token: Some(TokenCheck::Valid {
                role: Role::Agent,
                site: "lyon".into(),
            }),
            ..Facts::default()
        };
        assert_eq!(
            decide(&a, &lyon(), &token, NOW),
            Outcome::Issue { site: lyon() }
        );
    }

    #[test]
    fn a_relay_s_identity_cannot_be_taken_by_an_agent_request() {
        let facts = Facts {
            node: known(Role::Relay, "lyon"),
            site_open_until: Some(NOW + 3600),
            approved: true,
            ..Facts::default()
        };
        let out = decide(
            &ask(Role::Agent, "relay-1", relay("lyon")),
            &lyon(),
            &facts,
            NOW,
        );
        assert!(matches!(out, Outcome::Refuse(_)), "{out:?}");
    }

    #[test]
    fn a_known_node_never_moves_to_another_site_and_re_enrols_only_by_the_dsi() {
        let elsewhere = Facts {
            node: known(Role::Agent, "paris"),
            approved: true,
            ..Facts::default()
        };
        let a = ask(Role::Agent, "nuc-1", relay("lyon"));
        assert!(matches!(
            decide(&a, &lyon(), &elsewhere, NOW),
            Outcome::Refuse(_)
        ));
        let here_open = Facts {
            node: known(Role::Agent, "lyon"),
            site_open_until: Some(NOW + 3600),
            ..Facts::default()
        };
        assert!(matches!(
            decide(&a, &lyon(), &here_open, NOW),
            Outcome::Pending { .. }
        ));
        let here_approved = Facts {
            node: known(Role::Agent, "lyon"),
            approved: true,
            ..Facts::default()
        };
        assert_eq!(
            decide(&a, &lyon(), &here_approved, NOW),
            Outcome::Issue { site: lyon() }
        );
    }

    #[test]
    fn tokens_must_match_role_and_site() {
        let a = ask(Role::Agent, "nuc-1", relay("lyon"));
        for token in [
            TokenCheck::Valid {
                role: Role::Relay,
                site: "lyon".into(),
            },
            TokenCheck::Valid {
                role: Role::Agent,
                site: "paris".into(),
            },
            TokenCheck::Refused("expired"),
        ] {
            let facts = Facts {
                token: Some(token),
                ..Facts::default()
            };
            assert!(matches!(
                decide(&a, &lyon(), &facts, NOW),
                Outcome::Refuse(_)
            ));
        }
    }

    #[test]
    fn renewals_are_for_enrolled_unrevoked_nodes_only() {
        let mut a = ask(Role::Agent, "nuc-1", relay("lyon"));
        a.renewal = true;
        assert!(matches!(
            decide(&a, &lyon(), &Facts::default(), NOW),
            Outcome::Refuse(_)
        ));
        let enrolled = Facts {
            node: known(Role::Agent, "lyon"),
            ..Facts::default()
        };
        assert_eq!(
            decide(&a, &lyon(), &enrolled, NOW),
            Outcome::Issue { site: lyon() }
        );
        let revoked = Facts {
            node: Some(Known {
                site: "lyon".into(),
                role: Role::Agent,
                revoked: true,
            }),
            ..Facts::default()
        };
        assert!(matches!(
            decide(&a, &lyon(), &revoked, NOW),
            Outcome::Refuse(_)
        ));
    }

    #[test]
    fn direct_requests_need_a_token() {
        let a = ask(Role::Relay, "relay-2", Via::Direct);
        assert!(site_of(&a, None).is_err());
        let t = TokenCheck::Valid {
            role: Role::Relay,
            site: "lyon".into(),
        };
        assert_eq!(site_of(&a, Some(&t)), Ok(lyon()));
    }
}
