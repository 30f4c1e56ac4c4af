//! Weight files in the safetensors format (readable by numpy and PyTorch users): every
//! parameter under its Keras-style name (`dense_1.kernel`), f32, row-major, plus batch
//! normalisation's running statistics (`batch_normalization_1.moving_mean`).
//!
//! Writes are atomic: a temporary file in the same directory, synced, then renamed over the
//! target, so a crash never leaves a half-written weight file.

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

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
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
