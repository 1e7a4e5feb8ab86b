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
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// A state file that cannot be read or written, or holds what this module did not write.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: bad line {line:?}")]
    BadLine { path: PathBuf, line: String },
}

type Result<T> = std::result::Result<T, StateFileError>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateFileError {
    let path = path.to_owned();
    move |source| StateFileError::Io {
        action,
        path,
        source,
    }
}

/// The state files of one node of one cluster.
#[derive(Clone, Debug)]
pub struct Store {
    own: PathBuf,
    peers: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path, cluster: &str, node: &str) -> Result<Self> {
        fs::create_dir_all(state_dir)
            .map_err(io_error("creating the state directory", state_dir))?;
        Ok(Self {
            own: state_dir.join(format!("{cluster}.{node}.incarnation")),
            peers: state_dir.join(format!("{cluster}.{node}.peer-incarnations")),
        })
    }

    /// The incarnation of this start, recorded before it is used.
    pub fn next(&self, wall_clock_ns: u64) -> Result<u64> {
        let stored = match fs::read_to_string(&self.own) {
            Ok(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| StateFileError::BadLine {
                        path: self.own.clone(),
                        line: text.trim().to_owned(),
                    })?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("reading", &self.own)(e)),
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
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_error("reading", &self.peers)(e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let bad = || StateFileError::BadLine {
                    path: self.peers.clone(),
                    line: line.to_owned(),
                };
                let (peer, incarnation) = line.split_once(' ').ok_or_else(bad)?;
                Ok((
                    peer.parse().map_err(|_| bad())?,
                    incarnation.parse().map_err(|_| bad())?,
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
    let mut file = fs::File::create(&aside).map_err(io_error("writing", &aside))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &aside))?;
    fs::rename(&aside, path).map_err(io_error("replacing", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("syncing", dir))?;
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
