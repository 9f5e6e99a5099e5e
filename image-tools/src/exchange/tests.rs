use super::*;

/// One simulated transfer at 1 MB/s for 10 s, 1 ms steps: ten 25 KB requests outstanding,
/// each answered 20 ms after it was made, but the peer stalls from 2.0 s to 2.4 s and then
/// sends all it owes at once. Returns the most bytes that arrived in any second, and in all.
fn stalled_peer(ceiling: Option<u64>) -> (u64, u64) {
    stalled_peer_over(ceiling, 20, 10)
}

/// The same over a link whose round trip is `rtt_ms`, with at most `most` requests outstanding.
fn stalled_peer_over(ceiling: Option<u64>, rtt_ms: u64, most: usize) -> (u64, u64) {
    const REQ: u64 = 25_000;
    let mut bucket = TokenBucket::new(8_000_000, 8_000_000 / 40);
    let mut window = Window::default();
    let mut owed: Vec<Duration> = Vec::new();
    let mut ready_at: Option<Duration> = None;
    let mut arrivals: Vec<(Duration, u64)> = Vec::new();
    for ms in 0..10_000u64 {
        let now = Duration::from_millis(ms);
        if !(2_000..2_400).contains(&ms) {
            owed.retain(|&due| {
                if due > now {
                    return true;
                }
                window.arrived(now, REQ, REQ);
                arrivals.push((now, REQ));
                false
            });
        }
        while owed.len() < most {
            let at = *ready_at.get_or_insert_with(|| now + bucket.take(now, REQ));
            let fits = ceiling.is_none_or(|c| window.wait_for(now, REQ, c).is_zero());
            if now < at || !fits {
                break;
            }
            window.outstanding += REQ;
            owed.push(now + Duration::from_millis(rtt_ms));
            ready_at = None;
        }
    }
    let busiest = arrivals
        .iter()
        .map(|&(start, _)| {
            arrivals
                .iter()
                .filter(|&&(t, _)| t >= start && t < start + Duration::from_secs(1))
                .map(|&(_, n)| n)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    (busiest, arrivals.iter().map(|&(_, n)| n).sum())
}

/// Writes 64 KiB frames to a peer that takes `per_frame` for each; the frames sent before the
/// pace ends the reply, or `None` if `frames` all went through.
fn paced(per_frame: Duration, frames: u64) -> Option<u64> {
    let mut pace = Pace::default();
    for n in 0..frames {
        let allowance = pace.allowance(64 << 10)?;
        if per_frame > allowance {
            return Some(n);
        }
        pace.wrote(64 << 10, per_frame);
    }
    None
}

#[test]
fn a_reply_ends_when_its_peer_reads_too_slowly_over_it_not_per_write() {
    // 64 KiB/s (a slow WAN shared by requests) is served to the end, however long.
    assert_eq!(paced(Duration::from_secs(1), 100_000), None);
    // So is a peer that keeps the server waiting less than a frame takes at the least rate.
    assert_eq!(paced(Duration::from_millis(3_900), 100_000), None);
    // 8 KiB/s: every write is far under the 30 s a single frame may take, but the reply ends
    // once the peer is the grace (30 s) behind 16 KiB/s: after 7 frames it has kept the server
    // waiting 56 s and earned 62 s, so the 8th may take 6 s, not 8.
    assert_eq!(paced(Duration::from_secs(8), 100_000), Some(7));
    // A peer that takes longer than 30 s for one frame is dropped at once.
    assert_eq!(paced(Duration::from_secs(31), 10), Some(0));
}

#[test]
fn a_server_admits_within_its_limits_and_gives_places_back() {
    let limits = Limits {
        peers: 3,
        per_node: 2,
        unenrolled: 1,
        handshakes: 1,
        ..Limits::RELAY
    };
    let shared = Arc::new(Shared::new(limits));
    let peer = |n: &str| Slot::Peer(n.to_owned());
    let h = Admitted::take(&shared, Slot::Handshake).expect("first handshake");
    assert!(Admitted::take(&shared, Slot::Handshake).is_none());
    drop(h);
    assert!(Admitted::take(&shared, Slot::Handshake).is_some());
    let u = Admitted::take(&shared, Slot::Unenrolled).expect("one unenrolled");
    assert!(Admitted::take(&shared, Slot::Unenrolled).is_none());
    // Connections without a certificate take nothing from enrolled peers.
    let a1 = Admitted::take(&shared, peer("a")).expect("a");
    let a2 = Admitted::take(&shared, peer("a")).expect("a again");
    assert!(Admitted::take(&shared, peer("a")).is_none(), "per node");
    let b = Admitted::take(&shared, peer("b")).expect("b");
    assert!(Admitted::take(&shared, peer("c")).is_none(), "peers");
    drop((a1, u));
    assert!(Admitted::take(&shared, peer("c")).is_some());
    assert!(Admitted::take(&shared, Slot::Unenrolled).is_some());
    drop((a2, b));
    let a = shared.admitted.lock().expect("lock");
    assert_eq!((a.peers, a.unenrolled, a.handshakes), (0, 0, 0));
    assert!(a.per_node.is_empty());
}

#[test]
fn connections_share_one_chunk_list_per_master_while_any_holds_it() {
    let manifest = crate::manifest::tests::sample();
    let master = MasterRef {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    };
    let catalog = MemoryCatalog::default();
    let key = crate::keys::SigningKey::generate().expect("key");
    catalog.add_manifest(master.clone(), manifest.clone().sign(&key).bytes().to_vec());
    let lists = ChunkLists::default();
    let first = lists.get(&catalog, &master).expect("list");
    // Sorted and without the repeated chunk, so that a lookup is a binary search.
    let mut ids: Vec<ChunkId> = manifest.chunks().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(&first[..], &ids[..]);
    let second = lists.get(&catalog, &master).expect("list");
    assert!(Arc::ptr_eq(&first, &second), "a second copy was built");
    // Once no connection holds it, it is freed and built again when asked for.
    drop((first, second));
    assert!(lists.0.lock().expect("lock")[&master].upgrade().is_none());
    assert_eq!(lists.get(&catalog, &master).expect("list").len(), 3);
    let unknown = MasterRef::new("other", "1").unwrap();
    assert!(lists.get(&catalog, &unknown).is_none());
}

#[test]
fn a_stalled_peer_cannot_push_any_second_over_the_ceiling() {
    // Without the ceiling, what was owed lands on top of a full second.
    let (busiest, _) = stalled_peer(None);
    assert!(busiest > 1_150_000, "{busiest}");
    let ceiling = (1_000_000.0 * RateLimit::CEILING) as u64;
    let (busiest, total) = stalled_peer(Some(ceiling));
    assert!(busiest <= ceiling, "{busiest} B in one second");
    // And the link is still used: the stall costs its 0.4 s, little more.
    assert!(total >= 9_000_000, "{total} B in 10 s");
}

#[test]
fn a_satellite_link_is_kept_full_and_a_stall_dumps_at_most_two_round_trips_more() {
    // 1 MB/s over 600 ms: 24 requests of 25 KB must be on their way to keep the link full.
    let rtt = Duration::from_millis(600);
    let ceiling = (1_000_000.0 * RateLimit::CEILING) as u64;
    let (_, without) = stalled_peer_over(Some(ceiling), 600, 40);
    assert!(
        without < 7_500_000,
        "{without} B: the old ceiling did not limit"
    );
    let room = in_flight_room(8_000_000, rtt);
    assert_eq!(room, 1_150_000);
    let (busiest, total) = stalled_peer_over(Some(ceiling + room), 600, 40);
    // 10 s less the first round trip and the 0.4 s stall.
    assert!(total >= 8_500_000, "{total} B in 10 s");
    assert!(busiest <= ceiling + room, "{busiest} B in one second");
    // A LAN's round trip gets no more room than the ceiling's own; a city's a little.
    assert_eq!(in_flight_room(8_000_000, Duration::from_millis(25)), 0);
    assert_eq!(in_flight_room(8_000_000, Duration::from_millis(40)), 30_000);
    assert_eq!(
        in_flight_room(8_000_000, Duration::from_secs(5)),
        in_flight_room(8_000_000, Duration::from_secs(1))
    );
}

#[test]
fn the_bucket_paces_to_its_rate_in_simulated_time() {
    // 8 Mbit/s = 1 MB/s, burst 1 Mbit.
    let mut b = TokenBucket::new(8_000_000, 1_000_000);
    let mut now = Duration::ZERO;
    let mut sent = 0u64;
    // Send 64 KiB items for 10 simulated seconds, waiting as told.
    while now < Duration::from_secs(10) {
        let wait = b.take(now, 65536);
        now += wait;
        sent += 65536;
    }
    let rate = sent as f64 / now.as_secs_f64();
    assert!(
        (rate - 1_000_000.0).abs() / 1_000_000.0 < 0.03,
        "rate {rate}"
    );
    // Halving the rate halves the pace from then on.
    b.set_rate(4_000_000, 500_000);
    let start = now;
    let mut sent = 0u64;
    while now < start + Duration::from_secs(10) {
        now += b.take(now, 65536);
        sent += 65536;
    }
    let rate = sent as f64 / (now - start).as_secs_f64();
    assert!((rate - 500_000.0).abs() / 500_000.0 < 0.03, "rate {rate}");
}

#[test]
fn lowering_the_rate_cuts_the_credit_saved_under_the_old_one() {
    // Regression: a relay starts unpaced (no plan yet) with a huge burst; its first plan sets
    // the site's cap, and the savings of the unpaced start must not carry over.
    let mut b = TokenBucket::new(100_000_000_000, 10_000_000_000);
    b.take(Duration::ZERO, 0);
    b.set_rate(4_000_000, 400_000);
    // 5 MB at 4 Mbit/s is 10 s, less the 50 KB burst.
    let wait = b.take(Duration::from_millis(1), 5_000_000);
    assert!((wait.as_secs_f64() - 9.9).abs() < 0.05, "{wait:?}");
}

#[test]
fn idle_time_buys_at_most_the_burst() {
    let mut b = TokenBucket::new(8_000, 8_000); // 1 KB/s, 1 KB burst
    assert_eq!(b.take(Duration::ZERO, 1000), Duration::ZERO);
    // An hour idle, then 10 KB: only 1 KB was saved up.
    let wait = b.take(Duration::from_secs(3600), 10_000);
    assert!((wait.as_secs_f64() - 9.0).abs() < 0.01, "{wait:?}");
}
