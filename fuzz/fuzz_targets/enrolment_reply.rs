//! An enrolment reply from a relay or controller the node does not know yet: the `Enrolled` frame
//! decoded, then checked by `accept_enrolment` against the CA it names (pinned, so every check
//! runs). Random bytes never make a valid certificate: it must be refused.
#![no_main]
use image_tools::clock::Clock;
use image_tools::trust::{accept_enrolment, fingerprint, node_key, Endorsed, EnrolReply};
use image_tools::wire::{decode, Control, Frame, Role};
use image_tools::NodeId;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn node() -> &'static (Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| node_key().expect("a node key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((
        Frame::Control(Control::Enrolled {
            certificate_der,
            ca_der,
            signing_key,
            bridge,
        }),
        _,
    ))) = decode(data)
    else {
        return;
    };
    let Some(signing) = Endorsed::from_wire(&signing_key) else {
        return;
    };
    let (key, public) = node();
    let pinned = fingerprint(&ca_der);
    let reply = EnrolReply {
        certificate_der,
        ca_der,
        signing,
        bridge,
    };
    let clock = Clock::parse_now("start=2026-12-01T22:30:00Z").expect("a clock");
    let node = NodeId::new("nuc-1").expect("a node id");
    let outcome = accept_enrolment(
        pinned,
        Role::Agent,
        &node,
        key.clone(),
        public,
        reply,
        clock,
    );
    assert!(outcome.is_err());
});
