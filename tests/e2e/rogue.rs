//! A node gone bad: its certificate is genuine, it says it holds every chunk asked about and
//! serves other bytes under every id (peers and sibling relays must refuse them and drop it).

use std::net::SocketAddr;

use image_tools::exchange::{self, FrameReader};
use image_tools::trust::{Admit, Revoked};
use image_tools::wire::{self, Control, ErrorCode, Frame, Hello, Role};
use image_tools::{NodeId, VerifiedChunk};

use crate::fleet::Agent;

/// Serves as `node` (enrolled with `role`) on loopback, to whom `admit` lets in; its address.
pub fn start(node: &Agent, role: Role, admit: Admit) -> SocketAddr {
    let (rt, name) = (&node.rt, node.node.as_str());
    let tls = node
        .creds
        .server_config(admit, Revoked::default(), node.clock)
        .unwrap();
    let _guard = rt.enter();
    let endpoint = exchange::server_endpoint("127.0.0.1:0".parse().unwrap(), tls).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let me = NodeId::new(name).unwrap();
    rt.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let me = me.clone();
                    tokio::spawn(async move {
                        let mut reader = FrameReader::default();
                        let Ok(Some(Frame::Control(request))) = reader.next(&mut recv).await else {
                            return;
                        };
                        let reply = match request {
                            Control::Hello(_) => {
                                vec![Frame::Control(Control::HelloAck(Hello::new(role, &me)))]
                            }
                            Control::Has(ids) => vec![Frame::Control(Control::HasReply(
                                wire::pack_bits(&vec![true; ids.len()]),
                            ))],
                            Control::GetChunks(ids) => {
                                let fake = VerifiedChunk::from_raw(
                                    b"not the chunk you asked for".repeat(40),
                                );
                                let mut out: Vec<Frame> = ids
                                    .into_iter()
                                    .map(|id| Frame::Chunk {
                                        id,
                                        stored: [fake.header().to_vec(), fake.payload().to_vec()]
                                            .concat(),
                                    })
                                    .collect();
                                out.push(Frame::Control(Control::End));
                                out
                            }
                            _ => vec![Frame::Control(Control::Error {
                                code: ErrorCode::BadRequest,
                                message: "rogue".into(),
                            })],
                        };
                        for frame in reply {
                            let bytes = wire::encode_to_vec(&frame).unwrap();
                            if send.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    addr
}
