//! Wake-on-LAN: the magic packet (6 x 0xFF, then the MAC 16 times) sent by UDP broadcast on the
//! site VLAN. Nothing is routed: the relay is on the NUCs' own VLAN.

use std::net::{SocketAddr, UdpSocket};

/// A MAC address, parsed from `aa:bb:cc:dd:ee:ff` (or with `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        let bytes: Vec<u8> = parts
            .iter()
            .filter(|p| p.len() == 2)
            .filter_map(|p| u8::from_str_radix(p, 16).ok())
            .collect();
        let mac: [u8; 6] = bytes
            .try_into()
            .ok()
            .filter(|_| parts.len() == 6)
            .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
        if mac == [0; 6] || mac == [0xff; 6] {
            return Err(format!("{s:?} is not a usable MAC address"));
        }
        Ok(Mac(mac))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The 102-byte magic packet that wakes `mac`.
pub fn magic_packet(mac: Mac) -> [u8; 102] {
    let mut p = [0xffu8; 102];
    for i in 0..16 {
        p[6 + i * 6..12 + i * 6].copy_from_slice(&mac.0);
    }
    p
}

/// Sends the magic packet for `mac` to `target` (a broadcast address, port 9), three times: it is
/// one UDP datagram and a NUC's NIC gets no second chance.
pub fn wake(mac: Mac, target: SocketAddr) -> std::io::Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_broadcast(true)?;
    let packet = magic_packet(mac);
    for _ in 0..3 {
        socket.send_to(&packet, target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert_eq!("52-54-00-ab-cd-01".parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "zz:54:00:ab:cd:01",
            "00:00:00:00:00:00",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_magic_packet_reaches_a_listener() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        wake(mac, listener.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 200];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(n, 102);
        assert_eq!(&buf[..6], &[0xff; 6]);
        assert!(buf[6..102].chunks(6).all(|c| c == mac.0));
    }
}
