//! **Image folders** (docs/data-formats.md, "Image folders"): one sub-directory per
//! class, as torchvision's `ImageFolder` reads them — `train/cat/001.png`,
//! `train/dog/7.jpg` — PNG and JPEG.
//!
//! Classes are the sub-directory names in sorted order (ids 0, 1, …); a test folder
//! must use the same names (it may lack some). Images are read as RGB (`[3, H, W]`) or,
//! with `grayscale = true`, as luma (`[1, H, W]`), pixels scaled to [0, 1]. Every image
//! must have the first one's size unless `resize = [height, width]` is set (then each is
//! resized with Pillow's bilinear filter). Hidden files (`.DS_Store`) are skipped; any
//! other file that is not a `.png`, `.jpg` or `.jpeg` image, or does not decode, is an
//! error naming it. Decoding is capped per image ([`MAX_SIDE`] pixels a side,
//! [`MAX_ALLOC`] bytes), so a hostile file cannot exhaust memory.
//!
//! The decoders are the `png` and `zune-jpeg` crates, the ones the `image` crate itself
//! uses: `image` with only its PNG and JPEG features still builds its colour-management
//! stack, about 43 s more CPU per clean build (measured 2026-12-04), for conversions
//! that take a few lines here.

use crate::csv::MAX_CLASSES;
use crate::partition::Partition;
use crate::pooled::{PoolConfig, TestSplit};
use crate::{Error, Federation, Result};
use fedpace_core::data::{Dataset, DenseDataset};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The longest side of an image accepted.
pub const MAX_SIDE: u32 = 8192;
/// The most bytes one image's decoder may allocate.
pub const MAX_ALLOC: u64 = 256 << 20;

/// `[data.images]`: where the class folders are and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// A directory with one sub-directory of images per class.
    pub path: PathBuf,
    /// An optional held-out directory of the same form (the global test set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// Read one luma channel instead of RGB. Default false.
    #[serde(default)]
    pub grayscale: bool,
    /// Resize every image to `[height, width]`. Default: keep the size (which must be
    /// the same for every image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[u32; 2]>,
}

/// `[data] source = "images"`: image folders (`[data.images]`) split across clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSourceConfig {
    /// The folders (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagesConfig>,
    /// Number of clients. Default 30.
    pub num_clients: usize,
    /// How the pool is split (see [`PoolConfig`]). Default `iid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each client's samples held out, in [0, 1). Default 0.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Where client test splits come from (`pooled-matched` needs `test_path`).
    pub test_split: TestSplit,
    /// Seed of the partition and the test splits. Default: the run's `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for ImagesSourceConfig {
    fn default() -> Self {
        Self {
            images: None,
            num_clients: PoolConfig::default().num_clients,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            test_split: TestSplit::Local,
            seed: None,
        }
    }
}

impl ImagesSourceConfig {
    /// The keys shared by every pooled source.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            num_clients: self.num_clients,
            partition: self.partition.clone(),
            test_fraction: self.test_fraction,
            validation_fraction: self.validation_fraction,
            test_split: self.test_split,
            seed: self.seed,
        }
    }

    /// Checks every key without reading the files.
    pub fn validate(&self) -> Result<()> {
        let Some(c) = &self.images else {
            return Err(Error::invalid(
                "data.images",
                "(missing)",
                "an [data.images] table with at least `path` when source = \"images\"",
            ));
        };
        if let Some([h, w]) = c.resize {
            if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
                return Err(Error::invalid(
                    "data.images.resize",
                    format!("[{h}, {w}]"),
                    format!("[height, width], each in 1..={MAX_SIDE}"),
                ));
            }
        }
        self.pool().validate("images", c.test_path.is_some())
    }

    /// Decodes the images and splits them; `seed` is the run's.
    pub fn federation(&self, seed: u64) -> Result<Federation> {
        self.validate()?;
        let c = self.images.as_ref().expect("validated");
        let classes = class_dirs(&c.path)?;
        let names: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
        let mut size = c.resize.map(|[h, w]| (h, w));
        let train = read_folder(c, &classes, &mut size)?;
        let test = match &c.test_path {
            Some(t) => {
                let mut tc = class_dirs(t)?;
                for (name, _) in &tc {
                    if !names.contains(name) {
                        return Err(Error::format(
                            t,
                            format!(
                                "class folder '{name}' is not a class of {} ({})",
                                c.path.display(),
                                names.join(", ")
                            ),
                        ));
                    }
                }
                // Ids follow the training folder's classes.
                tc.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
                let ids: Vec<usize> = tc
                    .iter()
                    .map(|(n, _)| names.iter().position(|m| m == n).expect("checked"))
                    .collect();
                Some(read_folder_ids(c, &tc, &ids, names.len(), &mut size)?)
            }
            None => None,
        };
        let (h, w) = size.expect("at least one image");
        let shape = vec![if c.grayscale { 1 } else { 3 }, h as usize, w as usize];
        let test = test.map(|t| Arc::new(t) as Arc<dyn Dataset>);
        crate::pooled::federate("images", Arc::new(train), test, shape, &self.pool(), seed)
    }
}

/// `(class name, directory)` of every sub-directory, sorted by name.
fn class_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let p = e.map_err(|e| Error::io(root, e))?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if p.is_dir() && !name.starts_with('.') {
            out.push((name, p));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::format(
            root,
            "no class sub-directories (one per class expected)",
        ));
    }
    if out.len() > MAX_CLASSES {
        return Err(Error::format(
            root,
            format!("{} classes, at most {MAX_CLASSES}", out.len()),
        ));
    }
    Ok(out)
}

fn read_folder(
    c: &ImagesConfig,
    classes: &[(String, PathBuf)],
    size: &mut Option<(u32, u32)>,
) -> Result<DenseDataset> {
    let ids: Vec<usize> = (0..classes.len()).collect();
    read_folder_ids(c, classes, &ids, classes.len(), size)
}

/// Every image of `classes[i]` labelled `ids[i]`, in class then file-name order.
fn read_folder_ids(
    c: &ImagesConfig,
    classes: &[(String, PathBuf)],
    ids: &[usize],
    num_classes: usize,
    size: &mut Option<(u32, u32)>,
) -> Result<DenseDataset> {
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let mut first: Option<PathBuf> = None;
    for ((_, dir), &id) in classes.iter().zip(ids) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .collect();
        files.sort();
        for f in files {
            let resize = c.resize.map(|[h, w]| (h, w));
            let px = decode(&f, c.grayscale, resize, size, first.as_deref())?;
            first.get_or_insert(f);
            features.extend(px);
            labels.push(id as u32);
        }
    }
    if labels.is_empty() {
        return Err(Error::format(&c.path, "no images in the class folders"));
    }
    let (h, w) = size.expect("set by the first image");
    let shape = vec![if c.grayscale { 1 } else { 3 }, h as usize, w as usize];
    Ok(DenseDataset::new(features, shape, labels, num_classes)?)
}

/// One image as channel-major f32 in [0, 1], resized to `resize` if set; otherwise
/// `size` is fixed by the first image and every later one must match it.
fn decode(
    f: &Path,
    gray: bool,
    resize: Option<(u32, u32)>,
    size: &mut Option<(u32, u32)>,
    first: Option<&Path>,
) -> Result<Vec<f32>> {
    let ext = f
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let px =
        match ext.as_str() {
            "png" => decode_png(f)?,
            "jpg" | "jpeg" => decode_jpeg(f)?,
            _ => return Err(Error::format(
                f,
                "not a .png, .jpg or .jpeg image (class folders hold only images; hidden files \
                 are skipped)",
            )),
        };
    let (w, h) = (px.w as u32, px.h as u32);
    let planes = px.planes(gray);
    let c = if gray { 1 } else { 3 };
    match (resize, *size) {
        (Some((th, tw)), _) if (th, tw) != (h, w) => Ok(resize_planes(
            &planes,
            c,
            (h as usize, w as usize),
            (th as usize, tw as usize),
        )),
        (_, None) => {
            *size = Some((h, w));
            Ok(planes)
        }
        (_, Some(s)) if s == (h, w) => Ok(planes),
        (_, Some((th, tw))) => Err(Error::format(
            f,
            format!(
                "{w}×{h} pixels, but {} is {tw}×{th}; set data.images.resize = [height, width] \
                 to resize every image",
                first.map_or(String::new(), |p| p.display().to_string())
            ),
        )),
    }
}

/// Decoded 8-bit pixels, row-major and interleaved: 1 (gray), 2 (gray, alpha), 3 (RGB)
/// or 4 (RGBA) channels.
struct Pixels {
    w: usize,
    h: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Pixels {
    /// `[C, H, W]` in [0, 1]: RGB, or luma `(299 R + 587 G + 114 B) / 1000` (ITU-R
    /// 601, as Pillow's `convert("L")`); alpha is dropped, as Pillow's `convert` does.
    fn planes(&self, gray: bool) -> Vec<f32> {
        let n = self.w * self.h;
        let px = |i: usize| -> [f32; 3] {
            let p = &self.data[i * self.channels..];
            match self.channels {
                1 | 2 => [p[0] as f32; 3],
                _ => [p[0] as f32, p[1] as f32, p[2] as f32],
            }
        };
        if gray {
            return (0..n)
                .map(|i| match self.channels {
                    1 | 2 => px(i)[0] / 255.0,
                    _ => {
                        let [r, g, b] = px(i);
                        (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
                    }
                })
                .collect();
        }
        let mut out = vec![0f32; 3 * n];
        for i in 0..n {
            for (ch, v) in px(i).into_iter().enumerate() {
                out[ch * n + i] = v / 255.0;
            }
        }
        out
    }
}

fn decode_png(f: &Path) -> Result<Pixels> {
    let bad = |e: png::DecodingError| Error::format(f, format!("cannot decode: {e}"));
    let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
    let limits = png::Limits {
        bytes: MAX_ALLOC as usize,
    };
    let mut dec = png::Decoder::new_with_limits(std::io::BufReader::new(file), limits);
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(bad)?;
    let (w, h) = (reader.info().width, reader.info().height);
    check_side(f, w, h)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::format(f, "cannot decode: image too large"))?;
    let mut data = vec![0u8; size];
    let frame = reader.next_frame(&mut data).map_err(bad)?;
    data.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    Ok(Pixels {
        w: w as usize,
        h: h as usize,
        channels,
        data,
    })
}

fn decode_jpeg(f: &Path) -> Result<Pixels> {
    use zune_jpeg::zune_core::{colorspace::ColorSpace, options::DecoderOptions};
    let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
    let opts = DecoderOptions::default()
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), opts);
    let data = dec
        .decode()
        .map_err(|e| Error::format(f, format!("cannot decode: {e:?}")))?;
    let info = dec
        .info()
        .ok_or_else(|| Error::format(f, "cannot decode: no image header"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if data.len() != w * h * 3 {
        return Err(Error::format(f, "cannot decode: unexpected pixel count"));
    }
    Ok(Pixels {
        w,
        h,
        channels: 3,
        data,
    })
}

fn check_side(f: &Path, w: u32, h: u32) -> Result<()> {
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::format(
            f,
            format!("{w}×{h} pixels, at most {MAX_SIDE} a side"),
        ));
    }
    Ok(())
}

/// Resizes `c` planes of `from = (h, w)` to `to`, separably (width first, then height)
/// with Pillow's bilinear filter: a triangle of radius 1 output pixel, widened to the
/// scale factor when shrinking so every input pixel contributes (antialiasing).
fn resize_planes(p: &[f32], c: usize, from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let (h, w) = from;
    let (th, tw) = to;
    let wx = weights(w, tw);
    let wy = weights(h, th);
    let mut out = vec![0f32; c * th * tw];
    let mut row = vec![0f32; h * tw];
    for ch in 0..c {
        let plane = &p[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for (x, (x0, ws)) in wx.iter().enumerate() {
                row[y * tw + x] = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * plane[y * w + x0 + k])
                    .sum();
            }
        }
        for (y, (y0, ws)) in wy.iter().enumerate() {
            for x in 0..tw {
                out[ch * th * tw + y * tw + x] = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * row[(y0 + k) * tw + x])
                    .sum();
            }
        }
    }
    out
}

/// For each output index: the first input index and the normalised weights (Pillow's
/// `precompute_coeffs` with the bilinear filter).
fn weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let ws: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 - center + 0.5) / filterscale).abs()).max(0.0))
                .collect();
            let total: f64 = ws.iter().sum();
            (lo, ws.iter().map(|v| (v / total) as f32).collect())
        })
        .collect()
}
