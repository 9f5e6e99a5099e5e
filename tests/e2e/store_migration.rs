//! A controller that has run for months on a file store moves to a pack store: the DSI stops it,
//! converts its store in place (`nightcast-image convert`), and starts it again. Nothing is
//! imported again and no site downloads anything twice: the relay that held version 1 gets only
//! version 2's new chunks, which the DSI imported into the converted store while the controller
//! ran, and the master assembles bit for bit.

use image_tools::store::Format;

use crate::fleet::*;

#[test]
fn a_controllers_file_store_converted_to_packs_keeps_serving_its_sites() {
    let mut f = Fleet::build(
        "00:00-23:59",
        100,
        8,
        "start=2030-01-07T12:00:00Z speed=1",
        "lyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n",
        "[store]\ntighten_level = 0\nformat = \"files\"\n",
    );
    let store = f.dir.path().join("controller/store");
    assert_eq!(Format::of(&store).unwrap(), Some(Format::Files));
    let relay = f.relay(&DEFAULT_RELAY);
    relay.wait("version 1 to complete", 60, Relay::complete);
    let fetched_v1 = relay.n("fetched_bytes");

    // The DSI stops the controller and converts its store while nothing uses it.
    f.stop_controller();
    let out = ok(
        "nightcast-image",
        &[
            "convert",
            "--store",
            store.to_str().unwrap(),
            "--to",
            "packs",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["from"], "files", "{out}");
    assert_eq!(
        report["chunks"].as_u64().unwrap(),
        f.manifest.unique_chunks().len() as u64,
        "{out}"
    );
    assert!(report["corrupt"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(Format::of(&store).unwrap(), Some(Format::Packs));
    f.start_controller();

    // Version 2, imported by another process into the converted store while the controller
    // runs, goes to the relay, which downloads only its new chunks.
    let v2_image = image_tools::testimage::evolve(&f.image, 0.2, 9);
    let v2 = f.add_master("2", &v2_image);
    f.calendar("lyon,salle-1,demo,2,2030-01-08 18:00,2030-01-08 20:00\n");
    relay.wait("version 2 to be cached", 90, |r| r.holds("2"));
    let new_bytes = new_chunk_bytes(&f.manifest, &v2);
    let fetched_v2 = relay.n("fetched_bytes") - fetched_v1;
    assert!(
        fetched_v2 <= new_bytes + new_bytes / 20,
        "the relay fetched {fetched_v2} B for version 2, whose new chunks are {new_bytes} B"
    );
    assert_eq!(Format::of(&store).unwrap(), Some(Format::Packs));
    assemble_version_matches(&f, &relay.data.join("store"), "2", &v2_image);
}
