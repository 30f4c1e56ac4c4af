//! For unit tests: a scratch directory under the system temp dir, removed on drop.

use std::fs;
use std::path::PathBuf;

/// A fresh directory named after the test (`tag`), the process and the time.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("symdiff-unit-{tag}-{}-{nanos}", std::process::id()));
        let _ = fs::create_dir_all(&p);
        Scratch(p)
    }

    /// Writes `bytes` into the file `name` of the directory; its path.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        let _ = fs::write(&path, bytes);
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
