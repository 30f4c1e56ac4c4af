//! A person's own picture of a digit, made into an MNIST sample: [`prepare_digit`] reads a PNG or
//! JPEG file, [`prepare_image`] takes an image already decoded; both return the 28×28 input a
//! model trained on MNIST expects, and the list of what was done, in words.
//!
//! The steps are MNIST's own preprocessing as LeCun et al. describe it ("the images were
//! centered in a 28x28 image by computing the center of mass of the pixels, and translating the
//! image so as to position this point at the center of the 28x28 field"; the digits were first
//! size-normalized to fit a 20x20 box, preserving their aspect ratio, anti-aliased), preceded by
//! what a photograph or a drawing needs before it looks like a NIST scan:
//!
//! 1. **Decode.** The format is sniffed from the first bytes, never taken from the extension;
//!    PNG and JPEG are accepted. The dimensions are read from the header and an image over
//!    [`MAX_PIXELS`] is refused before a pixel is decoded. A JPEG's EXIF orientation is applied,
//!    so a phone photo is upright.
//! 2. **Grayscale.** Rec. 601 luminance `Y = 0.299 R + 0.587 G + 0.114 B` on the stored
//!    (gamma-encoded) values, each channel scaled to [0, 1] whatever its bit depth. Transparent
//!    pixels are composited over the paper they imply: where most of the border is transparent,
//!    the transparency *is* the paper, and it is the opposite of the visible strokes (white under
//!    a dark stroke, black under a light one); where the border is opaque, the paper is the
//!    border's own median colour.
//! 3. **Polarity.** MNIST digits are light strokes on a dark background. The background level is
//!    the median of the outermost ring of pixels (robust to a stroke that touches the edge); above
//!    0.5 the picture is inverted.
//! 4. **Levels.** The background and everything within a tenth of the way from it to the
//!    brightest ink becomes 0 (this swallows JPEG noise and paper texture), the brightest ink
//!    becomes 1, linearly in between. A picture whose brightest ink is less than
//!    [`MIN_CONTRAST`] above its background holds no digit: that is an error, not a blank sample.
//!    One background level serves the whole picture, so it should be evenly lit: a shadow across
//!    the paper that is darker than a tenth of the ink's contrast reads as ink.
//! 5. **Crop** to the bounding box of the pixels left above 0.
//! 6. **Fit** the box into [`FIT_SIDE`]×[`FIT_SIDE`], the longer side becoming 20, by area
//!    averaging: each output pixel is the mean of the input area it covers, fractional pixels
//!    weighted by the fraction covered (so a downscaled stroke is anti-aliased like MNIST's).
//! 7. **Centre** the fitted box in a black 28×28 canvas so that its centre of mass lands on the
//!    canvas centre (14, 14), in coordinates where pixel `(x, y)` covers `[x, x+1)×[y, y+1)`: the
//!    offset is rounded to whole pixels, so the centre of mass ends within half a pixel of (14, 14),
//!    and clamped so the box stays inside the canvas (a digit is never cut; a very lopsided one
//!    may then sit off centre).
//! 8. **Scale** so the brightest pixel is 1, as in MNIST, where nearly every digit reaches 255.
//!
//! Invariant: on success, `pixels` has exactly 784 finite values in [0, 1], row-major, white
//! digit on black, at least one of them 1; its centre of mass is within half a pixel of (14, 14)
//! unless the box had to be clamped into the canvas; the nonzero pixels fit a 20×20 box whose
//! longer side is 20.
//!
//! Never: panics on any input (corrupt or truncated file, 0×0 image, a header declaring
//! 100000×100000 pixels, NaN in a float image); decodes an image larger than [`MAX_PIXELS`];
//! trusts a file's extension; returns a blank sample for a blank picture; writes anything.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use image::metadata::Orientation;
use image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, Pixel, Primitive,
};

use super::data::MNIST_SIDE;

/// Most pixels (width × height) an image may have: 64 megapixels. Larger ones are refused from
/// their header, before decoding.
pub const MAX_PIXELS: u64 = 64_000_000;

/// Side of the box the digit is fitted into, inside the 28×28 canvas.
pub const FIT_SIDE: usize = 20;

/// Least difference between the background and the brightest ink (on a 0 to 1 scale) for a
/// picture to hold a digit.
pub const MIN_CONTRAST: f32 = 0.1;

/// Fraction of the way from the background to the brightest ink below which a pixel is
/// background (JPEG noise, paper texture, shading).
const NOISE_LEVEL: f32 = 0.1;

/// The formats accepted, for messages.
const ACCEPTED: &str = "accepted formats: PNG, JPEG";

/// Rec. 601 luminance weights for R, G, B.
const REC601: [f32; 3] = [0.299, 0.587, 0.114];

/// A picture made into an MNIST sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// 28×28 = 784 values in [0, 1], row-major, white digit on black like MNIST.
    pub pixels: Vec<f32>,
    /// What was done, in words, one item each, for the user: e.g. "decoded 640×480 JPEG",
    /// "converted to grayscale (...)", "inverted (light background: ...)", "cropped to the
    /// digit's 212×301 bounding box", "fitted into 14×20 (...)", "centred by mass in 28×28
    /// (...)", "scaled to [0, 1] (...)".
    pub steps: Vec<String>,
}

/// Everything that can go wrong making a picture into a sample. Each message starts with the
/// file (for [`prepare_image`], `"<format> image"`).
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// Opening or reading the file failed.
    #[error("cannot {op} {origin}: {source}")]
    Io {
        /// `open` or `read`.
        op: &'static str,
        /// The file.
        origin: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The content is not PNG or JPEG.
    #[error("{origin}: {found}; {ACCEPTED}")]
    Unsupported {
        /// The file.
        origin: String,
        /// What it is instead: `"a GIF image"`, `"not a recognised image (it starts with ...)"`.
        found: String,
    },
    /// The header declares more than [`MAX_PIXELS`] pixels.
    #[error(
        "{origin}: {width}×{height} pixels is more than the limit of {limit} (64 megapixels); refused before decoding"
    )]
    TooLarge {
        /// The file.
        origin: String,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// [`MAX_PIXELS`].
        limit: u64,
    },
    /// The decoder failed: a corrupt or truncated file, or a variant it does not support.
    #[error("{origin}: cannot decode it as {format}: {source}")]
    Decode {
        /// The file.
        origin: String,
        /// The format sniffed, `"PNG"` or `"JPEG"`.
        format: &'static str,
        /// The decoder's error.
        source: ImageError,
    },
    /// The image has no pixels.
    #[error("{origin}: the picture has no pixels ({width}×{height})")]
    Empty {
        /// The file.
        origin: String,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// Nothing stands out from the background.
    #[error(
        "{origin}: no digit found: the picture is blank (the brightest ink is {contrast:.3} above the background, at least {MIN_CONTRAST} needed)"
    )]
    Blank {
        /// The file.
        origin: String,
        /// Brightest ink minus background, after polarity.
        contrast: f32,
    },
}

/// Reads the PNG or JPEG file at `path` and makes it into an MNIST sample (see the module
/// documentation for the steps).
pub fn prepare_digit(path: &Path) -> Result<Prepared, PictureError> {
    let origin = path.display().to_string();
    let file =
        File::open(path).map_err(|source| PictureError::Io { op: "open", origin: origin.clone(), source })?;
    let (img, steps) = decode(BufReader::new(file), &origin)?;
    prepare(&img, &origin, steps)
}

/// The same from an already decoded image (for tests and for callers with bytes).
/// `format_name` (`"PNG"`, ...) is used in the steps and, as `"<format_name> image"`, in errors.
pub fn prepare_image(img: &DynamicImage, format_name: &str) -> Result<Prepared, PictureError> {
    let steps = vec![format!("decoded {}×{} {format_name}", img.width(), img.height())];
    prepare(img, &format!("{format_name} image"), steps)
}

/// Sniffs the format from the first 16 bytes, refuses anything but PNG and JPEG and anything
/// over [`MAX_PIXELS`] (from the header), decodes, and turns the image upright as its EXIF
/// orientation asks. Returns the image and the steps so far.
fn decode<R: BufRead + Seek>(
    mut reader: R,
    origin: &str,
) -> Result<(DynamicImage, Vec<String>), PictureError> {
    let io = |source| PictureError::Io { op: "read", origin: origin.to_owned(), source };
    let mut head = Vec::with_capacity(16);
    reader.by_ref().take(16).read_to_end(&mut head).map_err(io)?;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let unsupported = |found| PictureError::Unsupported { origin: origin.to_owned(), found };
    let (format, name) = match image::guess_format(&head) {
        Ok(ImageFormat::Png) => (ImageFormat::Png, "PNG"),
        Ok(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "JPEG"),
        Ok(other) => {
            let other = format!("{other:?}").to_uppercase();
            return Err(unsupported(format!("a {other} image")));
        }
        Err(_) if head.is_empty() => return Err(unsupported("the file is empty, not an image".to_owned())),
        Err(_) => {
            let bytes: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(unsupported(format!("not a recognised image (it starts with {})", bytes.join(" "))));
        }
    };
    let failed = |source| PictureError::Decode { origin: origin.to_owned(), format: name, source };
    // Only the header is read here; the pixels are decoded by `from_decoder`, after the check.
    // The crate's default limits stay on (512 MiB of allocations: a 64-megapixel RGBA16 image
    // fits), so a header the decoder itself finds absurd is refused even before ours.
    let mut reader = ImageReader::with_format(reader, format);
    reader.limits(Limits::default());
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, origin)?;
    // A corrupt EXIF block is no reason to refuse the pixels: it is read as "no transform".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(failed)?;
    let mut steps = vec![format!("decoded {width}×{height} {name}")];
    if orientation != Orientation::NoTransforms {
        img.apply_orientation(orientation);
        steps.push(format!(
            "turned upright as its EXIF orientation asks ({orientation:?}): now {}×{}",
            img.width(),
            img.height()
        ));
    }
    Ok((img, steps))
}

fn check_size(width: u32, height: u32, origin: &str) -> Result<(), PictureError> {
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PictureError::TooLarge { origin: origin.to_owned(), width, height, limit: MAX_PIXELS });
    }
    Ok(())
}

/// Steps 2 to 8 of the module documentation.
fn prepare(img: &DynamicImage, origin: &str, mut steps: Vec<String>) -> Result<Prepared, PictureError> {
    let (width, height) = (img.width(), img.height());
    check_size(width, height, origin)?;
    if width == 0 || height == 0 {
        return Err(PictureError::Empty { origin: origin.to_owned(), width, height });
    }
    // Both fit: their product is at most MAX_PIXELS.
    let (w, h) = (width as usize, height as usize);

    let mut ink = grayscale(img, w, h, &mut steps);
    levels(&mut ink, w, h, origin, &mut steps)?;

    let (x0, y0, bw, bh) = bounding_box(&ink, w, h)
        .ok_or_else(|| PictureError::Blank { origin: origin.to_owned(), contrast: 0.0 })?;
    let crop: Vec<f32> =
        (y0..y0 + bh).flat_map(|y| ink[y * w + x0..y * w + x0 + bw].iter().copied()).collect();
    drop(ink);
    steps.push(format!("cropped to the digit's {bw}×{bh} bounding box"));

    let long = bw.max(bh);
    let (tw, th) = ((bw * FIT_SIDE + long / 2) / long, (bh * FIT_SIDE + long / 2) / long);
    let (tw, th) = (tw.clamp(1, FIT_SIDE), th.clamp(1, FIT_SIDE));
    let fitted = resample(&crop, bw, bh, tw, th);
    steps.push(format!(
        "fitted into {tw}×{th} (the longer side {FIT_SIDE}, aspect ratio kept, by area averaging)"
    ));

    let mut pixels = centre(&fitted, tw, th, &mut steps);

    let peak = pixels.iter().copied().fold(0.0f32, f32::max);
    if peak > 0.0 {
        for p in &mut pixels {
            *p = (*p / peak).clamp(0.0, 1.0);
        }
    }
    steps.push(format!("scaled to [0, 1] (brightest pixel {peak:.2} → 1)"));
    Ok(Prepared { pixels, steps })
}

/// Calls `f(index, luminance, alpha)` for every pixel, row-major, both in [0, 1].
fn visit(img: &DynamicImage, f: impl FnMut(usize, f32, f32)) {
    match img {
        DynamicImage::ImageLuma8(b) => visit_buffer(b, f),
        DynamicImage::ImageLumaA8(b) => visit_buffer(b, f),
        DynamicImage::ImageRgb8(b) => visit_buffer(b, f),
        DynamicImage::ImageRgba8(b) => visit_buffer(b, f),
        DynamicImage::ImageLuma16(b) => visit_buffer(b, f),
        DynamicImage::ImageLumaA16(b) => visit_buffer(b, f),
        DynamicImage::ImageRgb16(b) => visit_buffer(b, f),
        DynamicImage::ImageRgba16(b) => visit_buffer(b, f),
        DynamicImage::ImageRgb32F(b) => visit_buffer(b, f),
        DynamicImage::ImageRgba32F(b) => visit_buffer(b, f),
        // `DynamicImage` is non-exhaustive: a future layout goes through a converted copy.
        other => visit_buffer(&other.to_rgba32f(), f),
    }
}

fn visit_buffer<P: Pixel>(buf: &ImageBuffer<P, Vec<P::Subpixel>>, mut f: impl FnMut(usize, f32, f32)) {
    let max: f32 = num_traits::cast(<P::Subpixel as Primitive>::DEFAULT_MAX_VALUE).unwrap_or(1.0);
    let unit = |c: P::Subpixel| {
        let v = num_traits::cast::<_, f32>(c).unwrap_or(0.0) / max;
        if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
    };
    for (i, p) in buf.pixels().enumerate() {
        let [r, g, b, a] = p.to_rgba().0.map(unit);
        let y = REC601[0] * r + REC601[1] * g + REC601[2] * b;
        f(i, y.clamp(0.0, 1.0), a);
    }
}

fn is_border(i: usize, w: usize, h: usize) -> bool {
    let (x, y) = (i % w, i / w);
    x == 0 || y == 0 || x + 1 == w || y + 1 == h
}

/// The values of the outermost ring of pixels.
fn border(values: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut ring = Vec::with_capacity(2 * (w + h));
    for y in 0..h {
        if y == 0 || y + 1 == h {
            ring.extend_from_slice(&values[y * w..(y + 1) * w]);
        } else {
            ring.push(values[y * w]);
            if w > 1 {
                ring.push(values[y * w + w - 1]);
            }
        }
    }
    ring
}

/// The upper median; 0 for no values.
fn median(mut values: Vec<f32>) -> f32 {
    let mid = values.len() / 2;
    if values.is_empty() {
        return 0.0;
    }
    *values.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Step 2: the luminance of every pixel, composited over the implied paper where transparent.
fn grayscale(img: &DynamicImage, w: usize, h: usize, steps: &mut Vec<String>) -> Vec<f32> {
    let mut luma = vec![0.0f32; w * h];
    let colour = img.color().has_color();
    steps.push(if colour {
        "converted to grayscale (Rec. 601 luminance: 0.299 R + 0.587 G + 0.114 B)".to_owned()
    } else {
        "read as grayscale".to_owned()
    });
    if !img.color().has_alpha() {
        visit(img, |i, y, _| luma[i] = y);
        return luma;
    }
    // First pass: is the transparency the paper, and what colour are the visible strokes?
    let (mut ring, mut ring_clear, mut translucent) = (0usize, 0usize, false);
    let (mut ink_sum, mut alpha_sum) = (0.0f64, 0.0f64);
    let mut ring_opaque = Vec::new();
    visit(img, |i, y, a| {
        translucent |= a < 1.0;
        ink_sum += f64::from(a * y);
        alpha_sum += f64::from(a);
        if is_border(i, w, h) {
            ring += 1;
            if a < 0.5 {
                ring_clear += 1;
            } else {
                ring_opaque.push(y);
            }
        }
    });
    let (paper, why) = if 2 * ring_clear > ring {
        let strokes = if alpha_sum > 0.0 { ink_sum / alpha_sum } else { 0.0 };
        if strokes < 0.5 {
            (1.0, "white paper (transparent background, dark strokes)".to_owned())
        } else {
            (0.0, "black paper (transparent background, light strokes)".to_owned())
        }
    } else {
        let paper = median(ring_opaque);
        (paper, format!("the border's own colour {paper:.2} (opaque border)"))
    };
    visit(img, |i, y, a| luma[i] = (a * y + (1.0 - a) * paper).clamp(0.0, 1.0));
    if translucent {
        steps.push(format!("composited the transparent pixels over {why}"));
    }
    luma
}

/// Steps 3 and 4: polarity, then levels; `values` become ink in [0, 1], 0 for background.
fn levels(
    values: &mut [f32],
    w: usize,
    h: usize,
    origin: &str,
    steps: &mut Vec<String>,
) -> Result<(), PictureError> {
    let background = median(border(values, w, h));
    let inverted = background > 0.5;
    if inverted {
        for v in values.iter_mut() {
            *v = 1.0 - *v;
        }
        steps.push(format!("inverted (light background: border median {background:.2})"));
    } else {
        steps.push(format!("kept as is (dark background: border median {background:.2})"));
    }
    let background = if inverted { 1.0 - background } else { background };
    let peak = values.iter().copied().fold(0.0f32, f32::max);
    let contrast = peak - background;
    if contrast < MIN_CONTRAST {
        return Err(PictureError::Blank { origin: origin.to_owned(), contrast: contrast.max(0.0) });
    }
    let black = background + NOISE_LEVEL * contrast;
    let span = peak - black;
    for v in values.iter_mut() {
        *v = ((*v - black) / span).clamp(0.0, 1.0);
    }
    steps.push(format!(
        "stretched the levels: background {background:.2} and up to {black:.2} → 0, brightest ink {peak:.2} → 1"
    ));
    Ok(())
}

/// The smallest box `(x0, y0, width, height)` holding every pixel above 0; `None` if none is.
fn bounding_box(values: &[f32], w: usize, h: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in values.chunks_exact(w).take(h).enumerate() {
        let Some(first) = row.iter().position(|&v| v > 0.0) else { continue };
        let last = row.iter().rposition(|&v| v > 0.0).unwrap_or(first);
        x0 = x0.min(first);
        x1 = x1.max(last);
        y0 = y0.min(y);
        y1 = y;
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// For each of `n_out` output pixels along an axis of `n_in` input pixels, the input pixels it
/// covers and their weights (the fraction of the output pixel each covers; they sum to 1).
fn area_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let first = a.floor() as usize;
            let end = (b.ceil() as usize).min(n_in);
            (first..end)
                .filter_map(|i| {
                    let overlap = b.min(i as f64 + 1.0) - a.max(i as f64);
                    (overlap > 0.0).then_some((i, (overlap / scale) as f32))
                })
                .collect()
        })
        .collect()
}

/// Step 6: area-averages `src` (`w`×`h`, row-major) into `tw`×`th`, rows first, then columns.
fn resample(src: &[f32], w: usize, h: usize, tw: usize, th: usize) -> Vec<f32> {
    let (across, down) = (area_weights(w, tw), area_weights(h, th));
    let mut rows = vec![0.0f32; h * tw];
    for (src_row, out_row) in src.chunks_exact(w).zip(rows.chunks_exact_mut(tw)) {
        for (out, weights) in out_row.iter_mut().zip(&across) {
            *out = weights.iter().map(|&(i, wt)| src_row[i] * wt).sum();
        }
    }
    let mut out = vec![0.0f32; th * tw];
    for (out_row, weights) in out.chunks_exact_mut(tw).zip(&down) {
        for &(y, wt) in weights {
            for (o, &v) in out_row.iter_mut().zip(&rows[y * tw..(y + 1) * tw]) {
                *o += v * wt;
            }
        }
    }
    out
}

/// Step 7: places `src` (`w`×`h`, at most 28×28) in a black 28×28 canvas with its centre of mass
/// at (14, 14), the offset rounded and clamped so that `src` stays inside.
fn centre(src: &[f32], w: usize, h: usize, steps: &mut Vec<String>) -> Vec<f32> {
    let side = MNIST_SIDE;
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in src.iter().enumerate() {
        let v = f64::from(v);
        mass += v;
        mx += v * ((i % w) as f64 + 0.5);
        my += v * ((i / w) as f64 + 0.5);
    }
    let (cx, cy) = if mass > 0.0 { (mx / mass, my / mass) } else { (w as f64 / 2.0, h as f64 / 2.0) };
    let half = side as f64 / 2.0;
    let place = |c: f64, len: usize| ((half - c).round().max(0.0) as usize).min(side.saturating_sub(len));
    let (ox, oy) = (place(cx, w), place(cy, h));
    let mut canvas = vec![0.0f32; side * side];
    for (y, row) in src.chunks_exact(w).enumerate().take(side - oy) {
        let start = (oy + y) * side + ox;
        let n = w.min(side - ox);
        canvas[start..start + n].copy_from_slice(&row[..n]);
    }
    steps.push(format!(
        "centred by mass in {side}×{side} (centre of mass {cx:.1}, {cy:.1} of the {w}×{h} box; placed at {ox}, {oy})"
    ));
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use image::{Rgba, RgbaImage};

    const BLACK: [u8; 4] = [0, 0, 0, 255];
    const WHITE: [u8; 4] = [255, 255, 255, 255];
    const DARK_BLUE: [u8; 4] = [20, 30, 120, 255];
    const LIGHT_YELLOW: [u8; 4] = [250, 240, 170, 255];
    /// Transparent pixels whose colour channels are black, as many editors save them.
    const CLEAR_BLACK: [u8; 4] = [0, 0, 0, 0];
    const CLEAR_WHITE: [u8; 4] = [255, 255, 255, 0];

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Shape {
        /// A "1": an upright bar, 0.12 wide and 0.7 tall (in units of the picture's shorter side).
        Bar,
        /// A "0": an elliptical ring, 0.48 wide and 0.72 tall, the hole 0.55 of that.
        Ring,
    }

    /// Whether the point `(u, v)`, relative to the picture's centre in units of its shorter
    /// side, is inside `shape`.
    fn inside(shape: Shape, u: f64, v: f64) -> bool {
        match shape {
            Shape::Bar => u.abs() < 0.06 && v.abs() < 0.35,
            Shape::Ring => (0.55 * 0.55..=1.0).contains(&((u / 0.24).powi(2) + (v / 0.36).powi(2))),
        }
    }

    /// `shape` drawn in `ink` on `paper` in a `w`×`h` picture, anti-aliased (4×4 samples a
    /// pixel), every channel alpha included mixed by the coverage.
    fn render(shape: Shape, w: u32, h: u32, ink: [u8; 4], paper: [u8; 4]) -> RgbaImage {
        let side = f64::from(w.min(h));
        RgbaImage::from_fn(w, h, |x, y| {
            let mut hits = 0u32;
            for sy in 0..4 {
                for sx in 0..4 {
                    let u = (f64::from(x) + (f64::from(sx) + 0.5) / 4.0 - f64::from(w) / 2.0) / side;
                    let v = (f64::from(y) + (f64::from(sy) + 0.5) / 4.0 - f64::from(h) / 2.0) / side;
                    hits += u32::from(inside(shape, u, v));
                }
            }
            let c = f64::from(hits) / 16.0;
            Rgba(std::array::from_fn(|k| {
                (f64::from(paper[k]) + c * (f64::from(ink[k]) - f64::from(paper[k]))).round() as u8
            }))
        })
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        let img =
            if format == ImageFormat::Jpeg { DynamicImage::ImageRgb8(img.to_rgb8()) } else { img.clone() };
        if let Err(e) = img.write_to(&mut bytes, format) {
            panic!("cannot encode the test image as {format:?}: {e}");
        }
        bytes.into_inner()
    }

    /// A path under the temporary directory, unique to this process and call.
    fn temp_path(name: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("symdiff-picture-{}-{n}-{name}", std::process::id()))
    }

    /// Writes `bytes` to a temporary file named like `name`, runs [`prepare_digit`] on it and
    /// removes it.
    fn prepare_bytes(name: &str, bytes: &[u8]) -> (PathBuf, Result<Prepared, PictureError>) {
        let path = temp_path(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            panic!("cannot write {}: {e}", path.display());
        }
        let result = prepare_digit(&path);
        let _ = std::fs::remove_file(&path);
        (path, result)
    }

    fn at(p: &[f32], x: usize, y: usize) -> f32 {
        p[y * MNIST_SIDE + x]
    }

    /// Centre of mass, in coordinates where pixel `(x, y)` covers `[x, x+1)×[y, y+1)`.
    fn centre_of_mass(p: &[f32]) -> (f32, f32) {
        let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
        for (i, &v) in p.iter().enumerate() {
            m += v;
            mx += v * ((i % MNIST_SIDE) as f32 + 0.5);
            my += v * ((i / MNIST_SIDE) as f32 + 0.5);
        }
        (mx / m, my / m)
    }

    /// Width and height of the box holding every nonzero pixel.
    fn ink_box(p: &[f32]) -> (usize, usize) {
        bounding_box(p, MNIST_SIDE, MNIST_SIDE).map_or((0, 0), |(_, _, w, h)| (w, h))
    }

    fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
    }

    /// The least [`mean_abs_diff`] between `a` and `b` shifted by at most one pixel each way.
    fn shifted_diff(a: &[f32], b: &[f32]) -> f32 {
        let n = MNIST_SIDE as isize;
        let mut best = f32::INFINITY;
        for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
            let mut sum = 0.0;
            for y in 0..n {
                for x in 0..n {
                    let (sx, sy) = (x + dx, y + dy);
                    let other = if (0..n).contains(&sx) && (0..n).contains(&sy) {
                        b[(sy * n + sx) as usize]
                    } else {
                        0.0
                    };
                    sum += (a[(y * n + x) as usize] - other).abs();
                }
            }
            best = best.min(sum / a.len() as f32);
        }
        best
    }

    fn reference(shape: Shape) -> Vec<f32> {
        let img = DynamicImage::ImageRgba8(render(shape, 400, 400, WHITE, BLACK));
        match prepare_image(&img, "reference") {
            Ok(p) => p.pixels,
            Err(e) => panic!("reference {shape:?}: {e}"),
        }
    }

    /// The invariants every sample must satisfy, and what the shape must look like; returns the
    /// mean absolute difference from the same shape drawn large and clean.
    fn check_sample(label: &str, shape: Shape, p: &Prepared, inverted: bool) -> f32 {
        let px = &p.pixels;
        assert_eq!(px.len(), 784, "{label}: {} pixels", px.len());
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)), "{label}: a value outside [0, 1]");
        assert!(px.contains(&1.0), "{label}: no pixel at 1");
        let (cx, cy) = centre_of_mass(px);
        assert!((cx - 14.0).abs() <= 0.51 && (cy - 14.0).abs() <= 0.51, "{label}: centre of mass {cx}, {cy}");
        let (bw, bh) = ink_box(px);
        assert!(bw <= 20 && bh <= 20 && bw.max(bh) >= 19, "{label}: ink box {bw}×{bh}");
        let did_invert = p.steps.iter().any(|s| s.starts_with("inverted"));
        assert_eq!(did_invert, inverted, "{label}: steps {:?}", p.steps);
        match shape {
            Shape::Bar => {
                assert!(bw <= 5 && bh == 20, "{label}: a bar's ink box is {bw}×{bh}");
                assert!(
                    at(px, 14, 14) > 0.5 && at(px, 14, 6) > 0.5 && at(px, 14, 22) > 0.5,
                    "{label}: the bar has a gap"
                );
                assert!(at(px, 9, 14) == 0.0 && at(px, 19, 14) == 0.0, "{label}: ink beside the bar");
            }
            Shape::Ring => {
                assert!(at(px, 14, 14) < 0.1 && at(px, 13, 13) < 0.1, "{label}: no hole in the middle");
                let row = &px[14 * MNIST_SIDE..15 * MNIST_SIDE];
                let left = row[..10].iter().copied().fold(0.0, f32::max);
                let right = row[18..].iter().copied().fold(0.0, f32::max);
                assert!(left > 0.5 && right > 0.5, "{label}: sides {left}, {right}");
            }
        }
        // Centring is defined to half a pixel: a symmetric box of odd width has its centre of
        // mass on a pixel edge, and the rounding may go either way. So the shape is compared
        // up to a shift of one pixel, and as it comes within the looser bound.
        let expected = reference(shape);
        let diff = mean_abs_diff(px, &expected);
        let shifted = shifted_diff(px, &expected);
        assert!(
            diff < 0.1 && shifted < 0.05,
            "{label}: mean absolute difference {diff} ({shifted} shifted) from the reference"
        );
        diff
    }

    /// Area averaging conserves ink: each output pixel's weights sum to 1, and each input
    /// pixel's weights sum to the fraction of an output pixel it is (`n_out / n_in`).
    #[test]
    fn area_weights_conserve_ink() {
        for (n_in, n_out) in [(1, 20), (3, 20), (20, 20), (21, 20), (1000, 20), (999, 13), (7, 1)] {
            let weights = area_weights(n_in, n_out);
            assert_eq!(weights.len(), n_out);
            let mut per_input = vec![0.0f64; n_in];
            for (o, ws) in weights.iter().enumerate() {
                let sum: f32 = ws.iter().map(|&(_, wt)| wt).sum();
                assert!((sum - 1.0).abs() < 1e-5, "{n_in}→{n_out}: output {o} weighs {sum}");
                for &(i, wt) in ws {
                    per_input[i] += f64::from(wt);
                }
            }
            let share = n_out as f64 / n_in as f64;
            for (i, got) in per_input.iter().enumerate() {
                assert!((got - share).abs() < 1e-4, "{n_in}→{n_out}: input {i} weighs {got}, not {share}");
            }
        }
    }

    /// How a case reaches the module: decoded already, or through a file of that format whose
    /// name is given (the extension may lie).
    #[derive(Debug, Clone, Copy)]
    enum Via {
        Image,
        File(ImageFormat, &'static str),
    }

    /// Draws `shape` in `ink` on `paper` at `w`×`h`, passes it `via`, and checks the sample;
    /// `inverted`: whether the background is light, so the picture must be inverted.
    fn check(shape: Shape, w: u32, h: u32, ink: [u8; 4], paper: [u8; 4], via: Via, inverted: bool) {
        let label = format!("{shape:?} {w}×{h} {ink:?} on {paper:?} via {via:?}");
        let img = DynamicImage::ImageRgba8(render(shape, w, h, ink, paper));
        let (result, format) = match via {
            Via::Image => (prepare_image(&img, "test"), "test"),
            Via::File(format, name) => {
                let (_, result) = prepare_bytes(name, &encode(&img, format));
                (result, if format == ImageFormat::Png { "PNG" } else { "JPEG" })
            }
        };
        let p = result.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(p.steps.first(), Some(&format!("decoded {w}×{h} {format}")), "{label}");
        check_sample(&label, shape, &p, inverted);
    }

    #[test]
    fn digits() {
        use Shape::{Bar, Ring};
        let png = Via::File(ImageFormat::Png, "digit.png");
        let jpeg = Via::File(ImageFormat::Jpeg, "digit.jpg");
        #[rustfmt::skip]
        let cases = [
            (Bar,  28,   28,   BLACK,     WHITE,        Via::Image, true),
            (Ring, 28,   28,   BLACK,     WHITE,        Via::Image, true),
            (Ring, 28,   28,   WHITE,     BLACK,        Via::Image, false),
            (Bar,  100,  60,   WHITE,     BLACK,        png,        false),
            (Ring, 100,  60,   BLACK,     WHITE,        png,        true),
            (Ring, 400,  400,  DARK_BLUE, LIGHT_YELLOW, png,        true),
            (Bar,  400,  400,  DARK_BLUE, LIGHT_YELLOW, jpeg,       true),
            (Ring, 1000, 300,  BLACK,     WHITE,        jpeg,       true),
            (Ring, 1000, 300,  WHITE,     BLACK,        jpeg,       false),
            (Bar,  1000, 300,  BLACK,     WHITE,        png,        true),
            (Ring, 300,  1000, LIGHT_YELLOW, DARK_BLUE, jpeg,       false),
            (Ring, 100,  60,   BLACK,     WHITE,        jpeg,       true),
            // Transparent paper: the visible strokes decide its colour, whatever the channels say.
            (Ring, 400,  400,  BLACK,     CLEAR_BLACK,  png,        true),
            (Bar,  100,  60,   BLACK,     CLEAR_WHITE,  png,        true),
            (Ring, 100,  60,   WHITE,     CLEAR_BLACK,  png,        false),
            (Ring, 28,   28,   BLACK,     CLEAR_BLACK,  Via::Image, true),
            // The format comes from the content, not the name.
            (Ring, 100,  60,   BLACK,     WHITE,        Via::File(ImageFormat::Png, "digit.jpg"), true),
            (Bar,  100,  60,   BLACK,     WHITE,        Via::File(ImageFormat::Jpeg, "digit"),    true),
        ];
        for (shape, w, h, ink, paper, via, inverted) in cases {
            check(shape, w, h, ink, paper, via, inverted);
        }
    }

    /// Every pixel layout the decoder can produce gives the same sample.
    #[test]
    fn layouts() {
        let img = DynamicImage::ImageRgba8(render(Shape::Ring, 120, 90, BLACK, WHITE));
        let mut nan = img.to_rgb32f();
        for p in nan.pixels_mut() {
            if p.0 == [1.0; 3] {
                p.0 = [f32::NAN, 2.0, 1.0];
            }
        }
        #[rustfmt::skip]
        let cases: [(&str, DynamicImage, f32); 9] = [
            ("L8",      img.to_luma8().into(),        0.01),
            ("La8",     img.to_luma_alpha8().into(),  0.01),
            ("Rgb8",    img.to_rgb8().into(),         0.01),
            ("L16",     img.to_luma16().into(),       0.01),
            ("La16",    img.to_luma_alpha16().into(), 0.01),
            ("Rgb16",   img.to_rgb16().into(),        0.01),
            ("Rgba16",  img.to_rgba16().into(),       0.01),
            ("Rgba32F", img.to_rgba32f().into(),      0.01),
            // NaN reads as 0 and 2.0 as 1: the paper becomes (0, 1, 1), still light but less so,
            // which only changes the anti-aliased edges.
            ("Rgb32F with NaN and 2.0", nan.into(), 0.05),
        ];
        let expected = prepare_image(&img, "Rgba8").unwrap_or_else(|e| panic!("Rgba8: {e}")).pixels;
        for (name, layout, most) in cases {
            let p = prepare_image(&layout, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let diff = mean_abs_diff(&p.pixels, &expected);
            assert!(diff < most, "{name}: mean absolute difference {diff} from Rgba8");
            check_sample(name, Shape::Ring, &p, true);
        }
    }

    /// The steps, in order, for an ordinary picture.
    #[test]
    fn steps() {
        let img = DynamicImage::ImageRgba8(render(Shape::Ring, 400, 200, BLACK, WHITE));
        let (_, result) = prepare_bytes("steps.png", &encode(&img, ImageFormat::Png));
        let p = result.unwrap_or_else(|e| panic!("{e}"));
        let expected = [
            "decoded 400×200 PNG",
            "converted to grayscale (Rec. 601",
            "inverted (light background: border median 1.00)",
            "stretched the levels: background 0.00",
            "cropped to the digit's 96×144 bounding box",
            "fitted into 13×20 (",
            "centred by mass in 28×28",
            "scaled to [0, 1]",
        ];
        assert_eq!(p.steps.len(), expected.len(), "{:?}", p.steps);
        for (step, prefix) in p.steps.iter().zip(expected) {
            assert!(step.starts_with(prefix), "`{step}` does not start with `{prefix}`");
        }
    }

    /// A PNG of one black pixel whose header is changed to declare `w`×`h`.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
                }
            }
            !c
        }
        let mut png = encode(&image::GrayImage::new(1, 1).into(), ImageFormat::Png);
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, CRC.
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    /// Deterministic noise (xorshift), starting with `first`.
    fn noise(first: &[u8], n: usize) -> Vec<u8> {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut v = first.to_vec();
        v.extend((0..n).map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        }));
        v
    }

    /// What a case puts at its path.
    enum Input {
        Bytes(Vec<u8>),
        Missing,
        Directory,
    }

    /// Runs [`prepare_digit`] on `input` and checks that it fails with a message naming the
    /// file and containing `expected`.
    fn check_err(input: Input, expected: &str) {
        let (path, result) = match input {
            Input::Bytes(bytes) => prepare_bytes("bad.png", &bytes),
            Input::Missing => {
                let path = temp_path("missing.png");
                let result = prepare_digit(&path);
                (path, result)
            }
            Input::Directory => {
                let path = temp_path("dir.png");
                let _ = std::fs::create_dir(&path);
                let result = prepare_digit(&path);
                let _ = std::fs::remove_dir(&path);
                (path, result)
            }
        };
        let shown = path.display().to_string();
        match result {
            Ok(p) => panic!("{shown}: prepared ({:?}), expected an error with `{expected}`", p.steps),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(expected), "`{msg}` lacks `{expected}`");
                assert!(msg.contains(&shown), "`{msg}` does not name the file");
            }
        }
    }

    #[test]
    fn errors() {
        use Input::{Bytes, Directory, Missing};
        let blank_png =
            encode(&DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 60, Rgba(WHITE))), ImageFormat::Png);
        let blank_jpeg =
            encode(&image::GrayImage::from_pixel(640, 480, image::Luma([128])).into(), ImageFormat::Jpeg);
        let clear_png = encode(&DynamicImage::ImageRgba8(RgbaImage::new(50, 50)), ImageFormat::Png);
        let faint = render(Shape::Ring, 100, 100, [235, 235, 235, 255], WHITE);
        let faint_png = encode(&DynamicImage::ImageRgba8(faint), ImageFormat::Png);
        let good =
            encode(&DynamicImage::ImageRgba8(render(Shape::Ring, 100, 60, BLACK, WHITE)), ImageFormat::Png);
        let blank = "no digit found: the picture is blank";
        #[rustfmt::skip]
        let cases = [
            (Missing,                                  "cannot open"),
            (Directory,                                "cannot read"),
            (Bytes(vec![]),                            "the file is empty, not an image; accepted formats: PNG, JPEG"),
            (Bytes(noise(&[0x5a], 999)),               "not a recognised image (it starts with 5a "),
            (Bytes(noise(b"GIF89a", 100)),             "a GIF image; accepted formats: PNG, JPEG"),
            (Bytes(noise(b"BM", 100)),                 "a BMP image; accepted formats: PNG, JPEG"),
            (Bytes(noise(b"RIFF\0\0\0\0WEBPVP8 ", 99)), "a WEBP image; accepted formats: PNG, JPEG"),
            (Bytes(noise(b"\x89PNG\r\n\x1a\n", 500)),  "cannot decode it as PNG"),
            (Bytes(noise(&[0xff, 0xd8, 0xff], 500)),   "cannot decode it as JPEG"),
            (Bytes(good[..good.len() / 2].to_vec()),   "cannot decode it as PNG"),
            (Bytes(png_declaring(100_000, 100_000)),   "100000×100000 pixels is more than the limit of 64000000"),
            (Bytes(png_declaring(8001, 8000)),         "8001×8000 pixels is more than the limit"),
            // The decoder's own memory limit refuses this one from the header, before ours.
            (Bytes(png_declaring(u32::MAX, u32::MAX)), "cannot decode it as PNG: Memory limit exceeded"),
            // Exactly at the limit the header passes and the missing pixel data is the fault.
            (Bytes(png_declaring(8000, 8000)),         "cannot decode it as PNG"),
            (Bytes(blank_png),                         blank),
            (Bytes(blank_jpeg),                        blank),
            (Bytes(clear_png),                         blank),
            (Bytes(faint_png),                         blank),
        ];
        for (input, expected) in cases {
            check_err(input, expected);
        }
    }

    /// Errors of [`prepare_image`] name the format given.
    #[test]
    fn image_errors() {
        #[rustfmt::skip]
        let cases: [(DynamicImage, &str); 4] = [
            (DynamicImage::new_luma8(0, 0),                                "PNG image: the picture has no pixels (0×0)"),
            (DynamicImage::new_rgb8(0, 5),                                 "PNG image: the picture has no pixels (0×5)"),
            (DynamicImage::new_luma8(28, 28),                              "PNG image: no digit found: the picture is blank"),
            (DynamicImage::new_luma8(1, 1),                                "PNG image: no digit found: the picture is blank"),
        ];
        for (img, expected) in cases {
            match prepare_image(&img, "PNG") {
                Ok(p) => panic!("{expected}: prepared ({:?})", p.steps),
                Err(e) => {
                    assert!(e.to_string().starts_with(expected), "`{e}` does not start with `{expected}`")
                }
            }
        }
    }

    /// No prefix of a PNG or a JPEG, and no file with one byte changed, makes the module panic;
    /// whatever succeeds satisfies the output's invariant.
    #[test]
    fn damaged_files_never_panic() {
        let img = DynamicImage::ImageRgba8(render(Shape::Ring, 40, 30, BLACK, WHITE));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let good = encode(&img, format);
            let mut inputs: Vec<Vec<u8>> = (0..good.len()).step_by(7).map(|n| good[..n].to_vec()).collect();
            for i in (0..good.len()).step_by(5) {
                let mut bad = good.clone();
                bad[i] ^= 0x5a;
                inputs.push(bad);
            }
            for bytes in inputs {
                let result = decode(Cursor::new(&bytes), "damaged")
                    .and_then(|(img, steps)| prepare(&img, "damaged", steps));
                if let Ok(p) = result {
                    assert_eq!(p.pixels.len(), 784);
                    assert!(p.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
                }
            }
        }
    }
}
