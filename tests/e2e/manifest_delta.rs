//! A relay that holds version 1 of a master gets version 2's manifest as a delta to version 1's
//! (`GetManifestAgainst`): on the WAN it costs a fraction of the manifest, the relay's status and
//! metrics count it apart, and version 2 assembles bit for bit.

use crate::fleet::*;

#[test]
fn a_relay_holding_version_1_gets_version_2s_manifest_as_a_small_delta() {
    let f = Fleet::new("00:00-23:59", 100, 32, "start=2030-01-07T12:00:00Z speed=1");
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("version 1 to complete", 60, Relay::complete);
    let v1_manifest = std::fs::metadata(f.dir.path().join("demo-1.manifest"))
        .unwrap()
        .len();
    // Version 1 came whole: the relay had nothing to make a delta against.
    assert_eq!(relay.n("manifest_bytes_full"), v1_manifest);
    assert_eq!(relay.n("manifest_bytes_delta"), 0);

    let v2_image = image_tools::testimage::evolve(&f.image, 0.01, 5);
    let v2 = f.add_master("2", &v2_image);
    f.calendar("lyon,salle-1,demo,2,2030-01-08 18:00,2030-01-08 20:00\n");
    relay.wait("version 2 to be cached", 90, |r| r.holds("2"));
    let v2_path = f.dir.path().join("demo-2.manifest");
    let v2_manifest = std::fs::metadata(&v2_path).unwrap().len();
    let delta = relay.n("manifest_bytes_delta");
    assert_eq!(
        relay.n("manifest_bytes_full"),
        v1_manifest,
        "v2 came whole: {}",
        relay.log_text()
    );
    assert!(
        delta > 0 && delta * 10 < v2_manifest,
        "version 2's manifest cost {delta} B on the wire, the manifest is {v2_manifest} B"
    );
    assert!(
        relay.log_text().contains("manifest came as a delta"),
        "{}",
        relay.log_text()
    );
    // The relay keeps the exact signed bytes, and version 2 assembles bit for bit.
    assert_eq!(
        std::fs::read(relay.data.join("manifests/demo-2.manifest")).unwrap(),
        std::fs::read(&v2_path).unwrap()
    );
    let new_bytes = new_chunk_bytes(&f.manifest, &v2);
    assert!(new_bytes > 0);
    assemble_version_matches(&f, &relay.data.join("store"), "2", &v2_image);
}
