//! The one place where glue's message contract meets dora: metadata conversion, typed send and receive.
//!
//! Nodes call [`send`] and [`decode`] with `glue::msg` types and never touch raw arrays or parameters, so every
//! message crossing the graph is validated by `glue::msg` on both ends.

use dora_node_api::arrow_v59::array::Array;
use dora_node_api::dora_core::config::DataId;
use dora_node_api::{DoraArray, DoraNode, MetadataParameters, Parameter};
use eyre::WrapErr;
use glue::msg::{Header, Message, MetaValue, Metadata, MsgError};

/// Converts glue metadata to dora parameters.
pub fn to_parameters(meta: &Metadata) -> MetadataParameters {
    meta.iter()
        .map(|(k, v)| {
            let p = match v {
                MetaValue::Bool(b) => Parameter::Bool(*b),
                MetaValue::Int(i) => Parameter::Integer(*i),
                MetaValue::Float(f) => Parameter::Float(*f),
                MetaValue::Str(s) => Parameter::String(s.clone()),
                MetaValue::Ints(v) => Parameter::ListInt(v.clone()),
                MetaValue::Floats(v) => Parameter::ListFloat(v.clone()),
                MetaValue::Strs(v) => Parameter::ListString(v.clone()),
            };
            (k.clone(), p)
        })
        .collect()
}

/// Converts dora parameters to glue metadata; timestamps become RFC 3339 strings.
pub fn from_parameters(params: &MetadataParameters) -> Metadata {
    params
        .iter()
        .map(|(k, p)| {
            let v = match p {
                Parameter::Bool(b) => MetaValue::Bool(*b),
                Parameter::Integer(i) => MetaValue::Int(*i),
                Parameter::Float(f) => MetaValue::Float(*f),
                Parameter::String(s) => MetaValue::Str(s.clone()),
                Parameter::ListInt(v) => MetaValue::Ints(v.clone()),
                Parameter::ListFloat(v) => MetaValue::Floats(v.clone()),
                Parameter::ListString(v) => MetaValue::Strs(v.clone()),
                Parameter::Timestamp(t) => MetaValue::Str(t.to_rfc3339()),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Encodes `msg` and sends it on `output`.
pub fn send<M: Message>(node: &mut DoraNode, output: &str, header: &Header, msg: &M) -> eyre::Result<()> {
    let (array, meta) = msg.encode(header);
    node.send_output(DataId::from(output.to_owned()), to_parameters(&meta), DoraArray::from(array))
        .wrap_err_with(|| format!("sending `{output}`"))
}

/// Decodes and validates an input as message type `M`.
pub fn decode<M: Message>(metadata: &dora_node_api::Metadata, data: &DoraArray) -> Result<(Header, M), MsgError> {
    let array: &dyn Array = data.as_array().as_ref();
    M::decode(array, &from_parameters(&metadata.parameters))
}

/// Reads a node setting from the environment (dora passes a node's `env:` map), with a default.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> eyre::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(key) {
        Ok(v) => v.parse().map_err(|e| eyre::eyre!("environment variable {key}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

/// How long a source node stays alive after its last output (see [`linger`]); `LINGER_MS` overrides it.
pub const DEFAULT_LINGER_MS: u64 = 2000;

/// Keeps a source node alive for `LINGER_MS` (default [`DEFAULT_LINGER_MS`]) after its last output, or until the
/// dataflow stops it. dora 1.1 tears down a node's zenoh publishers when the node exits, and samples still in
/// flight to a slower receiver (the recorder writing an episode) are lost with them; lingering lets them land.
pub fn linger(events: &mut dora_node_api::EventStream) -> eyre::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(env_or("LINGER_MS", DEFAULT_LINGER_MS)?);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match events.recv_timeout(left) {
            Some(dora_node_api::Event::Stop(_)) | None => break,
            Some(_) => {}
        }
    }
    Ok(())
}

/// Per-tick processing times of a node, reported at the end of a run (`NAME: N ticks, mean X ms, p95 Y ms`).
#[derive(Debug, Default)]
pub struct Latency {
    ms: Vec<f64>,
}

impl Latency {
    /// Records the time since `start`.
    pub fn record(&mut self, start: std::time::Instant) {
        self.ms.push(start.elapsed().as_secs_f64() * 1e3);
    }

    /// `N ticks, mean X ms, p95 Y ms` (or `no ticks`).
    pub fn summary(&self) -> String {
        if self.ms.is_empty() {
            return "no ticks".into();
        }
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
        format!("{} ticks, mean {mean:.1} ms, p95 {p95:.1} ms", sorted.len())
    }
}

/// One input event: its id, its dora metadata and its data.
pub struct Input {
    pub id: DataId,
    pub metadata: dora_node_api::Metadata,
    pub data: DoraArray,
}

/// The next input, skipping other events; `None` once the dataflow stops the node or the stream ends.
pub fn next_input(events: &mut dora_node_api::EventStream) -> Option<Input> {
    loop {
        match events.recv()? {
            dora_node_api::Event::Input { id, metadata, data } => return Some(Input { id, metadata, data }),
            dora_node_api::Event::Stop(_) => return None,
            _ => {}
        }
    }
}

/// How a message's episode relates to the one a node is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeOrder {
    /// From an episode that has ended: drop it.
    Stale,
    Current,
    /// The first message of a newer episode: the node resets its per-episode state.
    New,
}

/// The episode a node is in. dora delivers inputs of different ids in no fixed order, so a newer episode begins
/// with whichever of its messages comes first (its start event, or a frame that overtook it), never only with the
/// start event; a node that waited for the start would drop the frames that overtook it and stall the loop.
#[derive(Debug, Default)]
pub struct CurrentEpisode(Option<u64>);

impl CurrentEpisode {
    pub fn observe(&mut self, episode: u64) -> EpisodeOrder {
        match self.0 {
            Some(current) if episode < current => EpisodeOrder::Stale,
            Some(current) if episode == current => EpisodeOrder::Current,
            _ => {
                self.0 = Some(episode);
                EpisodeOrder::New
            }
        }
    }
}

#[cfg(test)]
mod episode_tests {
    use super::*;

    #[test]
    fn a_newer_episode_begins_with_its_first_message_and_older_ones_are_stale() {
        let mut e = CurrentEpisode::default();
        assert_eq!(e.observe(0), EpisodeOrder::New);
        assert_eq!(e.observe(0), EpisodeOrder::Current);
        assert_eq!(e.observe(2), EpisodeOrder::New, "a frame of episode 2 overtook its start event");
        assert_eq!(e.observe(2), EpisodeOrder::Current, "the start event that follows does not reset again");
        assert_eq!(e.observe(1), EpisodeOrder::Stale);
    }
}
