//! Running a dora graph of this repository from code (`glue eval --dataflow`, the dataflow tests): a copy of a
//! graph file with node settings and binary paths filled in, `dora run` on it, and what the nodes printed, read
//! back from the logs dora writes beside the graph (`out/<dataflow id>/log_<node>.jsonl`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use eyre::{Result, WrapErr, bail, ensure, eyre};

/// A dora graph file as lines of text, edited in place so that its comments and layout survive.
#[derive(Clone, Debug)]
pub struct Graph {
    lines: Vec<String>,
}

impl Graph {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read the graph {}", path.display()))?;
        Ok(Self { lines: text.lines().map(str::to_string).collect() })
    }

    /// The lines `[start, end)` of node `id`'s entry.
    fn node(&self, id: &str) -> Result<(usize, usize)> {
        let is_entry = |l: &str| l.trim_start().starts_with("- id:");
        let start = self
            .lines
            .iter()
            .position(|l| is_entry(l) && l.trim_start()["- id:".len()..].trim() == id)
            .ok_or_else(|| eyre!("the graph has no node `{id}`"))?;
        let end = self.lines[start + 1..].iter().position(|l| is_entry(l)).map_or(self.lines.len(), |i| start + 1 + i);
        Ok((start, end))
    }

    /// Sets `key: "value"` in node `id`'s `env:` (replacing the key's line, or adding it, and `env:`, if missing).
    pub fn set_env(&mut self, id: &str, key: &str, value: &str) -> Result<()> {
        let (start, mut end) = self.node(id)?;
        while end > start + 1 && self.lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        let indent = |l: &str| l.len() - l.trim_start().len();
        let field = indent(&self.lines[start]) + 2;
        let quoted = format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
        let env = match (start..end).find(|&i| self.lines[i].trim() == "env:") {
            Some(i) => i,
            None => {
                let env = end;
                self.lines.insert(env, format!("{}env:", " ".repeat(field)));
                end += 1;
                env
            }
        };
        let in_env = (env + 1..end).take_while(|&i| indent(&self.lines[i]) > field || self.lines[i].trim().is_empty());
        let line = format!("{}{key}: {quoted}", " ".repeat(field + 2));
        match in_env.clone().find(|&i| self.lines[i].trim_start().starts_with(&format!("{key}:"))) {
            Some(i) => self.lines[i] = line,
            None => self.lines.insert(in_env.last().map_or(env + 1, |i| i + 1), line),
        }
        Ok(())
    }

    /// Points every `path: target/release/NAME` at `dir/NAME`, which must exist.
    pub fn set_binaries(&mut self, dir: &Path) -> Result<()> {
        for line in &mut self.lines {
            if let Some(name) = line.trim_start().strip_prefix("path: target/release/") {
                let binary = std::path::absolute(dir.join(name))?;
                ensure!(binary.is_file(), "node binary {} is missing: build the nodes first (cargo build --release --workspace)", binary.display());
                let indent = line.len() - line.trim_start().len();
                *line = format!("{}path: {}", " ".repeat(indent), binary.display());
            }
        }
        Ok(())
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.lines.join("\n") + "\n").wrap_err_with(|| format!("cannot write {}", path.display()))
    }
}

/// The `dora` command: `$DORA`, else the project's `.venv/bin/dora` (the README's install), else `dora` on `PATH`.
pub fn dora_command() -> PathBuf {
    if let Some(path) = std::env::var_os("DORA") {
        return path.into();
    }
    // Absolute: `dora run` starts in the graph file's folder.
    match std::path::absolute(".venv/bin/dora") {
        Ok(venv) if venv.is_file() => venv,
        _ => PathBuf::from("dora"),
    }
}

/// Runs `dora run file` to its end (in the file's folder, where dora writes its logs), its output into `log`.
pub fn dora_run(dora: &Path, file: &Path, log: &Path) -> Result<()> {
    let out = std::fs::File::create(log).wrap_err_with(|| format!("cannot create {}", log.display()))?;
    let status = Command::new(dora)
        .arg("run")
        .arg(file)
        .current_dir(file.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .wrap_err_with(|| format!("cannot start `{} run`: install dora (see the README) or set DORA", dora.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        bail!("`dora run {}` failed ({status}); the end of {}:\n{}", file.display(), log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(())
}

/// What each node printed in the newest run of the graphs in `dir`, by node id, in order.
pub fn node_messages(dir: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let runs = dir.join("out");
    let newest = std::fs::read_dir(&runs)
        .wrap_err_with(|| format!("no dora logs in {}", runs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .max()
        .ok_or_else(|| eyre!("no dora run in {}", runs.display()))?;
    let mut messages = BTreeMap::new();
    for entry in std::fs::read_dir(&newest)? {
        let path = entry?.path();
        let Some(node) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("log_")?.strip_suffix(".jsonl")) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let lines: Result<Vec<String>> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).wrap_err_with(|| format!("bad log line in {}", path.display()))?;
                Ok(v["msg"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        messages.insert(node.to_string(), lines?);
    }
    Ok(messages)
}

/// A latency line of `dora_bridge::Latency::summary` (`N ticks, mean X ms, p95 Y ms`, any word for "ticks"):
/// `(N, mean, p95)`.
pub fn parse_latency(text: &str) -> Option<(u64, f64, f64)> {
    let mut words = text.split_whitespace();
    let n = words.next()?.parse().ok()?;
    words.next()?;
    ensure_word(words.next()?, "mean")?;
    let mean = words.next()?.parse().ok()?;
    ensure_word(words.next()?, "ms,")?;
    ensure_word(words.next()?, "p95")?;
    let p95 = words.next()?.parse().ok()?;
    ensure_word(words.next()?.trim_end_matches([',', ';']), "ms")?;
    Some((n, mean, p95))
}

fn ensure_word(word: &str, want: &str) -> Option<()> {
    (word == want).then_some(())
}

/// The first latency figure node `node` printed after `prefix` (e.g. `"encoder: "`).
pub fn node_latency(messages: &BTreeMap<String, Vec<String>>, node: &str, prefix: &str) -> Result<(u64, f64, f64)> {
    let lines = messages.get(node).ok_or_else(|| eyre!("node `{node}` left no log"))?;
    lines
        .iter()
        .find_map(|l| l.find(prefix).and_then(|i| parse_latency(&l[i + prefix.len()..])))
        .ok_or_else(|| eyre!("node `{node}` printed no `{prefix}N ticks, mean X ms, p95 Y ms` line"))
}

/// Checks that a path exists and makes it absolute (graph files run in another folder).
pub fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    ensure!(path.exists(), "{what} {} does not exist", path.display());
    std::path::absolute(path).wrap_err_with(|| format!("{what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "nodes:\n  - id: sim\n    path: target/release/glue-sim\n    env:\n      TASK: push-button # a comment\n      EPISODES: \"10\"\n\n  - id: policy\n    path: target/release/glue-policy\n    outputs: [action]\n";

    fn graph() -> Graph {
        Graph { lines: YAML.lines().map(str::to_string).collect() }
    }

    #[test]
    fn set_env_replaces_adds_and_creates_env_blocks() {
        let mut g = graph();
        g.set_env("sim", "TASK", "stack-block").unwrap();
        g.set_env("sim", "SEED_START", "1000").unwrap();
        g.set_env("policy", "TEMPORAL_ENSEMBLE", "0.01").unwrap();
        let bin = std::env::temp_dir().join(format!("glue-graph-test-{}", std::process::id()));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("glue-sim"), "").unwrap();
        let missing = g.clone().set_binaries(&bin).unwrap_err().to_string();
        assert!(missing.contains("glue-policy is missing"), "{missing}");
        std::fs::write(bin.join("glue-policy"), "").unwrap();
        g.set_binaries(&bin).unwrap();
        std::fs::remove_dir_all(&bin).ok();
        let text = g.lines.join("\n");
        assert_eq!(
            text,
            format!("nodes:\n  - id: sim\n    path: {0}/glue-sim\n    env:\n      TASK: \"stack-block\"\n      EPISODES: \"10\"\n      SEED_START: \"1000\"\n\n  - id: policy\n    path: {0}/glue-policy\n    outputs: [action]\n    env:\n      TEMPORAL_ENSEMBLE: \"0.01\"", bin.display())
        );
        assert!(g.set_env("camera", "FPS", "30").unwrap_err().to_string().contains("no node `camera`"));
    }

    #[test]
    fn latency_lines_parse() {
        assert_eq!(parse_latency("300 ticks, mean 4.7 ms, p95 36.9 ms (0 holds)"), Some((300, 4.7, 36.9)));
        assert_eq!(parse_latency("3 episodes, mean 40.0 ms, p95 41.5 ms"), Some((3, 40.0, 41.5)));
        assert_eq!(parse_latency("no ticks"), None);
        let messages = BTreeMap::from([("policy".to_string(), vec!["policy: 30 ticks, mean 4.0 ms, p95 9.0 ms (0 holds); chunks: 4 chunks, mean 30.0 ms, p95 31.0 ms".to_string()])]);
        assert_eq!(node_latency(&messages, "policy", "policy: ").unwrap(), (30, 4.0, 9.0));
        assert_eq!(node_latency(&messages, "policy", "chunks: ").unwrap(), (4, 30.0, 31.0));
        assert!(node_latency(&messages, "sim", "sim: ").is_err());
    }
}
