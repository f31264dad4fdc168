//! Image-hop benchmark node for `dataflow.bench-hop.yml`.
//!
//! `ROLE=send`: on each `tick` input, sends a `WIDTH`x`HEIGHT` rgb8 image (default 224x224) stamped with the send
//! time in its header. `ROLE=receive`: decodes each `image` through the message contract and records the latency
//! from the stamp (same machine, same clock); at the end prints min / median / p95 / max in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use dora_bridge::{decode, env_or, send};
use dora_node_api::{DoraNode, Event};
use glue::msg::{Header, Image};

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

fn main() -> eyre::Result<()> {
    let role: String = env_or("ROLE", "send".to_string())?;
    let count: u64 = env_or("COUNT", 300)?;
    let (w, h): (u32, u32) = (env_or("WIDTH", 224)?, env_or("HEIGHT", 224)?);
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut latencies_ms = Vec::new();
    let mut frame = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, .. } if id.as_str() == "tick" && role == "send" => {
                let image = Image { width: w, height: h, data: vec![(frame % 251) as u8; (w * h * 3) as usize] };
                send(&mut node, "image", &Header { episode: 0, frame, timestamp_ns: now_ns() }, &image)?;
                frame += 1;
                if frame == count {
                    break;
                }
            }
            Event::Input { id, metadata, data } if id.as_str() == "image" => {
                let (header, _image) = decode::<Image>(&metadata, &data)?;
                latencies_ms.push((now_ns() - header.timestamp_ns) as f64 * 1e-6);
            }
            Event::Stop(_) => break,
            _ => {}
        }
    }
    if role == "receive" {
        eyre::ensure!(!latencies_ms.is_empty(), "hop-bench: received no image");
        latencies_ms.sort_by(f64::total_cmp);
        let q = |p: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * p).round() as usize];
        println!(
            "image hop {w}x{h} rgb8 over {} messages: min {:.3} ms, median {:.3} ms, p95 {:.3} ms, max {:.3} ms",
            latencies_ms.len(), q(0.0), q(0.5), q(0.95), q(1.0)
        );
    }
    Ok(())
}
