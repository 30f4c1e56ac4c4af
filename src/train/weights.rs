//! Weight files in the safetensors format (readable by numpy and PyTorch users): every
//! parameter under its Keras-style name (`dense_1.kernel`), f32, row-major, plus batch
//! normalisation's running statistics (`batch_normalization_1.moving_mean`).
//!
//! Writes are atomic: a temporary file in the same directory (`.NAME.tmp-PID`), synced, then
//! renamed over the target, so a crash never leaves a half-written weight file. What a crash
//! does leave is that temporary file (up to the size of the target); `remove_stale_temps`
//! deletes those of processes that are gone. Reads refuse a tensor holding a NaN or an
//! infinity, naming it: no use of a weight file (evaluation, prediction, resuming) can do
//! anything sensible with one.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Errors reading or writing weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a safetensors file: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: has no tensor `{name}` (the model needs it; the file has: {present})")]
    Missing { path: String, name: String, present: String },
    #[error("{path}: `{name}` is {found:?} {dtype}, the model needs {expected:?} F32")]
    Shape { path: String, name: String, expected: Vec<usize>, found: Vec<usize>, dtype: String },
    #[error(
        "{path}: `{name}` holds a NaN or an infinity (element {index}); refusing values that are not finite"
    )]
    NotFinite { path: String, name: String, index: usize },
}

/// Writes named tensors to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, &ArrayD<f32>)],
    metadata: HashMap<String, String>,
) -> Result<(), WeightsError> {
    let io = |e| WeightsError::Io { path: path.display().to_string(), source: e };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, a)| {
            let data: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), data, a.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s)| {
            let v = TensorView::new(Dtype::F32, s.clone(), d).map_err(|e| WeightsError::Format {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_, WeightsError>>()?;
    let buffer = safetensors::serialize(views, Some(metadata))
        .map_err(|e| WeightsError::Format { path: path.display().to_string(), reason: e.to_string() })?;
    write_atomic(path, &buffer).map_err(io)
}

/// The directory of `path` and the prefix of its temporary files' names (`.NAME.tmp-`).
fn temp_prefix(path: &Path) -> (&Path, String) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
    (dir, format!(".{name}.tmp-"))
}

/// Whether process `pid` runs, where the system can tell (`/proc`, on Linux).
fn process_alive(pid: u32) -> Option<bool> {
    Path::new("/proc/self").exists().then(|| Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the temporary files that interrupted writes of `path` left behind, and returns
/// them. Only names of `write_atomic`'s pattern for this very target (`.NAME.tmp-PID`) are
/// candidates, never this process's own, and only those not written to for 10 seconds whose
/// process is gone (or, where the system cannot tell which processes run, untouched for an
/// hour): a live writer's file is never taken from under it. Errors (an unreadable directory,
/// a file removed meanwhile) leave the files where they are.
pub fn remove_stale_temps(path: &Path) -> Vec<std::path::PathBuf> {
    let (dir, prefix) = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let now = std::time::SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(pid) = digits.parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let idle = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
        let stale = meta.is_file()
            && idle.as_secs() >= 10
            && match process_alive(pid) {
                Some(alive) => !alive,
                None => idle.as_secs() >= 3600,
            };
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, prefix) = temp_prefix(path);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the tensors `wanted` (name and shape) from `path`.
pub fn load(path: &Path, wanted: &[(String, Vec<usize>)]) -> Result<Vec<ArrayD<f32>>, WeightsError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Io { path: p.clone(), source: e })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| WeightsError::Format { path: p.clone(), reason: e.to_string() })?;
    let mut out = Vec::new();
    for (name, shape) in wanted {
        let t = st.tensor(name).map_err(|_| {
            let mut present: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
            present.sort();
            WeightsError::Missing { path: p.clone(), name: name.clone(), present: present.join(", ") }
        })?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(WeightsError::Shape {
                path: p.clone(),
                name: name.clone(),
                expected: shape.clone(),
                found: t.shape().to_vec(),
                dtype: format!("{:?}", t.dtype()),
            });
        }
        let data: Vec<f32> =
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(index) = data.iter().position(|x| !x.is_finite()) {
            return Err(WeightsError::NotFinite { path: p.clone(), name: name.clone(), index });
        }
        out.push(
            ArrayD::from_shape_vec(IxDyn(shape), data)
                .map_err(|e| WeightsError::Format { path: p.clone(), reason: e.to_string() })?,
        );
    }
    Ok(out)
}

/// The metadata (string to string) of the safetensors file at `path`.
pub fn metadata(path: &Path) -> Result<HashMap<String, String>, WeightsError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Io { path: p.clone(), source: e })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| WeightsError::Format { path: p.clone(), reason: e.to_string() })?;
    Ok(meta.metadata().clone().unwrap_or_default().into_iter().collect())
}

#[cfg(test)]
mod tests {
    //! Stale temporary files: only our own pattern, only of processes that are gone, only
    //! files left alone for a while.

    use super::*;

    fn touch(path: &Path, age_secs: u64) {
        let f = std::fs::File::create(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs)).unwrap();
    }

    #[test]
    fn only_temporary_files_of_dead_writers_are_removed() {
        let dir = std::env::temp_dir().join(format!("symdiff-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("m.ckpt");
        // Above any pid_max (2^22 on Linux): no such process.
        let dead = 4_194_305_u32 + 17;
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let name = |n: &str| dir.join(n);
        touch(&name(&format!(".m.ckpt.tmp-{dead}")), 60); // a crashed writer's: removed
        touch(&name(&format!(".m.ckpt.tmp-{}", dead + 1)), 0); // just written: kept
        touch(&name(&format!(".m.ckpt.tmp-{me}")), 60); // this process's own: kept
        touch(&name(&format!(".m.ckpt.tmp-{parent}")), 60); // a live process's: kept
        touch(&name(&format!(".other.ckpt.tmp-{dead}")), 60); // another target's: kept
        touch(&name(&format!(".m.ckpt.tmp-+{dead}")), 60); // not our pattern: kept
        touch(&name(&format!(".m.ckpt.tmp-{dead}.bak")), 60); // not our pattern: kept
        touch(&name("m.ckpt"), 60); // the target itself: kept
        let removed = remove_stale_temps(&target);
        let gone = name(&format!(".m.ckpt.tmp-{dead}"));
        if Path::new("/proc/self").exists() {
            assert_eq!(removed, vec![gone.clone()]);
        } else {
            assert!(removed.is_empty(), "without /proc only files untouched for an hour go");
        }
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, 8 - removed.len());
        assert!(remove_stale_temps(&target).is_empty(), "a second pass finds nothing");
        // An hour-old file of a dead writer goes everywhere.
        touch(&gone, 7200);
        assert_eq!(remove_stale_temps(&target), vec![gone]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weights_that_are_not_finite_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("symdiff-nan-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let path = dir.join("w.safetensors");
            let a = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f32, 2.0]).unwrap();
            let b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.0f32, bad, 1.0]).unwrap();
            save(&path, &[("a".into(), &a), ("b".into(), &b)], HashMap::new()).unwrap();
            let wanted = [("a".to_owned(), vec![2]), ("b".to_owned(), vec![3])];
            let e = load(&path, &wanted).unwrap_err().to_string();
            assert!(e.contains("`b` holds a NaN or an infinity (element 1)"), "{e}");
            assert!(e.contains("w.safetensors"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
