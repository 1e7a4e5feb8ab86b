//! Boot incarnations that only ever increase (R-HB-3, R-HB-4), without trusting the wall clock.
//!
//! A node's incarnation is kept in its state directory and is, at every start, the larger of
//! the stored one plus one and the wall clock in nanoseconds: a clock set back cannot make it
//! go down, and a lost state file still yields a fresh, large one. The incarnations accepted
//! from each peer are kept there too, so a recording of a peer's earlier life is refused also
//! by a receiver that restarted meanwhile, however long the peer has been silent.
//!
//! Files are replaced atomically (written aside, synced, renamed, directory synced).

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// The state files of one node of one cluster.
#[derive(Clone, Debug)]
pub struct Store {
    own: PathBuf,
    peers: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path, cluster: &str, node: &str) -> Result<Self> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        Ok(Self {
            own: state_dir.join(format!("{cluster}.{node}.incarnation")),
            peers: state_dir.join(format!("{cluster}.{node}.peer-incarnations")),
        })
    }

    /// The incarnation of this start, recorded before it is used.
    pub fn next(&self, wall_clock_ns: u64) -> Result<u64> {
        let stored = match fs::read_to_string(&self.own) {
            Ok(text) => Some(text.trim().parse::<u64>().with_context(|| {
                format!("{} does not hold an incarnation number", self.own.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.own.display())),
        };
        let next = stored
            .map_or(0, |s| s.saturating_add(1))
            .max(wall_clock_ns)
            .max(1);
        write_atomically(&self.own, &format!("{next}\n"))?;
        Ok(next)
    }

    /// The highest incarnation accepted from each peer (by index), as recorded.
    pub fn peers(&self) -> Result<BTreeMap<usize, u64>> {
        let text = match fs::read_to_string(&self.peers) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.peers.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (peer, incarnation) = line
                    .split_once(' ')
                    .with_context(|| format!("{}: bad line {line:?}", self.peers.display()))?;
                Ok((
                    peer.parse()
                        .with_context(|| format!("{}: bad line {line:?}", self.peers.display()))?,
                    incarnation
                        .parse()
                        .with_context(|| format!("{}: bad line {line:?}", self.peers.display()))?,
                ))
            })
            .collect()
    }

    /// Records the incarnations accepted from the peers.
    pub fn record_peers(&self, peers: &BTreeMap<usize, u64>) -> Result<()> {
        let text: String = peers.iter().map(|(p, i)| format!("{p} {i}\n")).collect();
        write_atomically(&self.peers, &text)
    }
}

/// Replaces `path` with `text` atomically and durably.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = PathBuf::from(aside);
    let mut file =
        fs::File::create(&aside).with_context(|| format!("writing {}", aside.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", aside.display()))?;
    fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Wall-clock nanoseconds now (0 if the clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_increase_across_starts_even_when_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "c", "fws1").unwrap();
        let first = store.next(1_000_000).unwrap();
        assert_eq!(first, 1_000_000);
        // The clock stepped back by an hour: still higher.
        let second = store.next(10).unwrap();
        assert_eq!(second, 1_000_001);
        // A new store on the same directory (a restart) continues.
        let third = Store::new(dir.path(), "c", "fws1")
            .unwrap()
            .next(0)
            .unwrap();
        assert_eq!(third, 1_000_002);
        // Peers' incarnations round-trip.
        let peers: BTreeMap<usize, u64> = [(1, 77), (2, 5)].into();
        store.record_peers(&peers).unwrap();
        assert_eq!(store.peers().unwrap(), peers);
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "c", "fws1").unwrap();
        fs::write(dir.path().join("c.fws1.incarnation"), "garbage").unwrap();
        let error = format!("{:#}", store.next(5).unwrap_err());
        assert!(error.contains("c.fws1.incarnation"), "{error}");
    }
}
