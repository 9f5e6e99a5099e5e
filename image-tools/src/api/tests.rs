use serde_json::json;

use super::*;

#[test]
fn a_plan_row_keeps_its_verdict_and_detail_on_the_wire() {
    let on_time = json!({
        "site": "lyon", "session": "3", "room": "salle-1", "master": "win10", "version": "1",
        "start": 100, "deadline": 90, "new_bytes": 5, "cumulative_bytes": 7,
        "verdict": "on_time", "detail": {"ready_at": 80, "night": "2026-12-01"},
    });
    let row: PlanRow = serde_json::from_value(on_time.clone()).unwrap();
    assert_eq!(
        row.verdict,
        Verdict::OnTime {
            ready_at: 80,
            night: Some("2026-12-01".into())
        }
    );
    assert_eq!(serde_json::to_value(&row).unwrap(), on_time);
    let unknown = PlanRow {
        verdict: Verdict::UnknownMaster {},
        ..row
    };
    let value = serde_json::to_value(&unknown).unwrap();
    assert_eq!(
        (&value["verdict"], &value["detail"]),
        (&json!("unknown_master"), &json!({}))
    );
    assert_eq!(serde_json::from_value::<PlanRow>(value).unwrap(), unknown);
}

#[test]
fn a_verdict_names_its_reason_on_the_wire_and_an_older_answer_still_reads() {
    let late = Verdict::Late {
        shortfall_bytes: 9,
        override_secs: 1,
        reason: Reason::NoRelay,
    };
    let value = serde_json::to_value(&late).unwrap();
    assert_eq!(
        value,
        json!({"verdict": "late", "detail": {"shortfall_bytes": 9, "override_secs": 1,
            "reason": {"kind": "no_relay"}}})
    );
    let silent = Verdict::AtRisk {
        ready_at: 5,
        slack_secs: 6,
        needed_secs: 7,
        reason: Reason::RelaySilent { since: Some(4) },
    };
    let value = serde_json::to_value(&silent).unwrap();
    assert_eq!(
        value["detail"]["reason"],
        json!({"kind": "relay_silent", "since": 4})
    );
    assert_eq!(serde_json::from_value::<Verdict>(value).unwrap(), silent);
    // A controller from before reasons: the numbers were the reason.
    let old = json!({"verdict": "at_risk", "detail": {"ready_at": 5, "slack_secs": 6}});
    assert_eq!(
        serde_json::from_value::<Verdict>(old).unwrap(),
        Verdict::AtRisk {
            ready_at: 5,
            slack_secs: 6,
            needed_secs: 0,
            reason: Reason::Transfer,
        }
    );
}

#[test]
fn a_request_with_an_unknown_field_is_refused_by_name() {
    let e = serde_json::from_value::<NewRoom>(json!({"site": "lyon", "room": "a", "rooom": "b"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `rooom`"), "{e}");
}

#[test]
fn a_request_with_a_bad_id_is_refused_with_the_id_kind() {
    let e = serde_json::from_value::<NewSeat>(json!({"site": "lyon", "room": "a", "seat": "../x"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("seat name \"../x\" is not allowed"), "{e}");
    let e = serde_json::from_value::<NewToken>(json!({"role": "controller", "site": "lyon"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `controller`"), "{e}");
}

#[test]
fn defaults_fill_what_a_request_leaves_out() {
    let site: NewSite =
        serde_json::from_value(json!({"name": "lyon", "tz": "Europe/Paris", "cap_mbit": 20}))
            .unwrap();
    assert_eq!(
        (site.windows.as_str(), site.takeover),
        (DEFAULT_WINDOWS, None)
    );
    let o: NewOverride = serde_json::from_value(
        json!({"site": "lyon", "master": "win10", "version": "1", "reason": "r"}),
    )
    .unwrap();
    assert_eq!((o.by.as_str(), o.hours), ("unknown", 4));
    // An override without a deadline is no emergency push, and an older CLI's body still reads.
    assert_eq!((o.deadline, o.all_sites, o.dry_run), (None, false, false));
    assert_eq!(o.site.as_ref().map(|s| s.as_str()), Some("lyon"));
    let import: ImportMaster = serde_json::from_value(
        json!({"image": "/x", "name": "win10", "version": "1", "format": "qcow2"}),
    )
    .unwrap();
    assert_eq!(import.format, Some(crate::probe::ImageFormat::Qcow2));
    let e = serde_json::from_value::<ImportMaster>(
        json!({"image": "/x", "name": "win10", "version": "1", "format": "iso"}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsupported image format \"iso\""), "{e}");
}

#[test]
fn a_pending_node_carries_its_machine_and_an_enrolled_one_does_not() {
    let row: FleetRow = serde_json::from_value(json!({
        "site": "lyon", "node": "nuc-1", "role": "agent", "enrolled_at": null, "last_seen": 5,
        "holding": "", "seat": "", "waiting": null, "state": "pending", "attention": "PENDING",
        "status": "bare", "mac": "aa", "via": "relay-1", "key": "k",
    }))
    .unwrap();
    assert_eq!(row.mac.as_deref(), Some("aa"));
    let enrolled = FleetRow {
        mac: None,
        via: None,
        key: None,
        ..row
    };
    let value = serde_json::to_value(&enrolled).unwrap();
    assert!(value.get("mac").is_none(), "{value}");
}
