//! A user's own data: NumPy, LEAF JSON and image folders, read from the fixtures that
//! `fixtures/make_fixtures.py` writes with NumPy, Python's json and Pillow. Every
//! expected value below is that script's formula, recomputed here.

use fedpace_core::{Dataset, Inputs};
use fedpace_data::{
    build, DataConfig, ImagesConfig, ImagesSourceConfig, InputShape, LeafSourceConfig, NpyConfig,
    NpySourceConfig, Partition,
};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn dense(d: &dyn Dataset, i: usize) -> Vec<f32> {
    match d.batch(&[i]).inputs {
        Inputs::Dense { data, .. } => data,
        other => panic!("{other:?}"),
    }
}

/// All samples of every client (train and test) with their labels.
fn everything(fed: &fedpace_data::Federation) -> Vec<(Vec<f32>, u32)> {
    let mut out = Vec::new();
    for k in 0..fed.data.num_clients() {
        let c = fed.data.client(k).unwrap();
        for d in [&c.train, &c.test] {
            for i in 0..d.len() {
                out.push((dense(d.as_ref(), i), d.label(i)));
            }
        }
    }
    out.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    out
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fedpace-own-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn npz_pool_is_split_across_clients_with_its_own_test_set() {
    let mut npy = NpyConfig::new(fixture("npy/pool.npz"));
    npy.test_path = Some(fixture("npy/test.npz"));
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(npy),
        num_clients: Some(4),
        partition: Some(Partition::Dirichlet {
            alpha: 1.0,
            min_size: 5,
        }),
        ..Default::default()
    });
    let fed = build(&cfg, 3, Path::new("data")).unwrap();
    assert_eq!(fed.sample_shape, InputShape::Dense(vec![2, 3]));
    assert_eq!(fed.num_classes, 3);
    let all = everything(&fed);
    assert_eq!(all.len(), 60);
    for (i, (x, y)) in all.iter().enumerate() {
        let want: Vec<f32> = (0..2)
            .flat_map(|a| {
                (0..3).map(move |b| (i as f64 + a as f64 / 10.0 + b as f64 / 100.0) as f32)
            })
            .collect();
        assert_eq!((x, *y), (&want, i as u32 % 3));
    }
    let test = fed.global_test.unwrap();
    assert_eq!(test.len(), 12);
    assert_eq!(test.label(0), 1);
    assert_eq!(dense(test.as_ref(), 11)[5], (111.0f64 + 0.1 + 0.02) as f32);
}

#[test]
fn npy_pair_in_fortran_order_and_big_endian_labels_reads_row_major() {
    let mut npy = NpyConfig::new(fixture("npy/x.npy"));
    npy.labels = Some(fixture("npy/y.npy"));
    npy.scale = 0.5;
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(npy),
        num_clients: Some(2),
        test_fraction: Some(0.0),
        ..Default::default()
    });
    let fed = build(&cfg, 0, Path::new("data")).unwrap();
    assert_eq!(fed.sample_shape, InputShape::Dense(vec![6]));
    assert_eq!(fed.num_classes, 4);
    let all = everything(&fed);
    assert_eq!(all.len(), 40);
    for (x, y) in &all {
        // Row i starts with (7i mod 256) / 2, unique for i < 40.
        let i = (0..40)
            .find(|i| ((i * 7) % 256) as f32 * 0.5 == x[0])
            .unwrap();
        let want: Vec<f32> = (0..6).map(|j| ((i * 7 + j) % 256) as f32 * 0.5).collect();
        assert_eq!((x, *y), (&want, i as u32 % 4));
    }
}

#[test]
fn one_npz_per_client_gives_the_natural_partition() {
    let mut npy = NpyConfig::new("unused");
    npy.path = None;
    npy.clients = Some(fixture("npy/clients"));
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(npy),
        test_fraction: Some(0.2),
        ..Default::default()
    });
    assert!(cfg.is_natural());
    assert_eq!(cfg.effective_partition(), Partition::Natural);
    let fed = build(&cfg, 0, Path::new("data")).unwrap();
    assert_eq!(fed.data.num_clients(), 4);
    for k in 0..4 {
        let c = fed.data.client(k).unwrap();
        let n = 10 + 5 * k;
        assert_eq!(c.train.len() + c.test.len(), n);
        assert_eq!(c.train.len(), n - n / 5);
        for d in [&c.train, &c.test] {
            for i in 0..d.len() {
                let x = dense(d.as_ref(), i);
                let row = (x[0] as usize - 1000 * k) / 4;
                assert_eq!(x[3], (1000 * k + 4 * row + 3) as f32);
                assert_eq!(d.label(i), ((row + k) % 2) as u32);
            }
        }
    }
    // The files count the clients: another count is an error naming both.
    let DataConfig::Npy(mut c) = cfg else {
        unreachable!()
    };
    c.num_clients = Some(5);
    let e = build(&DataConfig::Npy(c), 0, Path::new("data"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("data.num_clients = 5: 4 (the .npz files in"),
        "{e}"
    );
}

#[test]
fn bad_npy_files_are_one_line_errors_naming_file_and_place() {
    let d = tmp("npy");
    let x = d.join("x.npy");
    let y = d.join("y.npy");
    std::fs::copy(fixture("npy/x.npy"), &x).unwrap();
    // Labels of the wrong length, then a truncated features file.
    let mut yb = std::fs::read(fixture("npy/y.npy")).unwrap();
    std::fs::write(&y, &yb).unwrap();
    yb.truncate(yb.len() - 4);
    let short = d.join("short.npy");
    std::fs::write(&short, &yb).unwrap();
    let run = |x: &Path, y: &Path| {
        let mut npy = NpyConfig::new(x);
        npy.labels = Some(y.to_path_buf());
        let cfg = DataConfig::Npy(NpySourceConfig {
            npy: Some(npy),
            ..Default::default()
        });
        build(&cfg, 0, Path::new("data")).unwrap_err().to_string()
    };
    let e = run(&x, &short);
    assert!(
        e.starts_with(&format!(
            "{}: shape [40] of 4-byte values needs 160 data bytes, the file has 156",
            short.display()
        )),
        "{e}"
    );
    let e = run(&y, &x);
    assert!(e.contains("labels of shape [40, 6], expected (40,)"), "{e}");
    std::fs::write(d.join("zip.npz"), b"PK\x03\x04 not really").unwrap();
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(NpyConfig::new(d.join("zip.npz"))),
        ..Default::default()
    });
    let e = build(&cfg, 0, Path::new("data")).unwrap_err().to_string();
    assert!(e.contains("zip.npz: not a readable .npz (zip) file"), "{e}");
    let mut npy = NpyConfig::new(fixture("npy/pool.npz"));
    npy.y = "labels".into();
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(npy),
        ..Default::default()
    });
    let e = build(&cfg, 0, Path::new("data")).unwrap_err().to_string();
    assert!(
        e.ends_with("pool.npz: no array 'labels' (it holds: x, y)"),
        "{e}"
    );
    for e in [run(&x, &short), run(&y, &x)] {
        assert_eq!(e.lines().count(), 1);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn leaf_users_are_clients_and_leaf_test_files_their_test_splits() {
    let mut cfg = LeafSourceConfig::new(fixture("leaf/train"));
    cfg.leaf.as_mut().unwrap().test_path = Some(fixture("leaf/test"));
    cfg.leaf.as_mut().unwrap().sample_shape = Some(vec![2, 2]);
    let fed = build(&DataConfig::Leaf(cfg.clone()), 0, Path::new("data")).unwrap();
    assert_eq!(fed.data.num_clients(), 3);
    assert_eq!(fed.sample_shape, InputShape::Dense(vec![2, 2]));
    assert_eq!(fed.num_classes, 3);
    for k in 0..3 {
        let c = fed.data.client(k).unwrap();
        assert_eq!((c.train.len(), c.test.len()), (5 + k, 2));
        for i in 0..c.train.len() {
            let x = dense(c.train.as_ref(), i);
            let row = x[1] as usize;
            assert_eq!(x, vec![k as f32, row as f32, row as f32 / 2.0, 1.0]);
            assert_eq!(c.train.label(i), ((row + k) % 3) as u32);
        }
        let t = dense(c.test.as_ref(), 0);
        assert!(t[1] >= 100.0, "{t:?}");
    }
    assert_eq!(fed.global_test.unwrap().len(), 6);
    // Without test files each user's samples are split by test_fraction.
    cfg.leaf.as_mut().unwrap().test_path = None;
    cfg.test_fraction = Some(0.4);
    cfg.max_clients = Some(2);
    let fed = build(&DataConfig::Leaf(cfg), 0, Path::new("data")).unwrap();
    assert_eq!(fed.data.num_clients(), 2);
    let c = fed.data.client(1).unwrap();
    assert_eq!((c.train.len(), c.test.len()), (3, 3));
}

#[test]
fn leaf_text_is_read_as_tokens_of_the_shakespeare_vocabulary() {
    let cfg = LeafSourceConfig::new(fixture("leaf-text/shakespeare.json"));
    let fed = build(&DataConfig::Leaf(cfg), 0, Path::new("data")).unwrap();
    assert_eq!(
        fed.sample_shape,
        InputShape::Tokens {
            seq_len: 8,
            vocab: 80
        }
    );
    assert_eq!(fed.num_classes, 80);
    let text = "To be, or not to be, that is the question";
    let c = fed.data.client(1).unwrap();
    assert_eq!(c.train.len() + c.test.len(), text.len() - 8);
    let id = |ch: char| fedpace_data::shakespeare::char_id(ch).unwrap() as u32;
    for d in [&c.train, &c.test] {
        for i in 0..d.len() {
            let Inputs::Tokens { data, seq_len } = d.batch(&[i]).inputs else {
                panic!()
            };
            assert_eq!(seq_len, 8);
            let window: String = data
                .iter()
                .map(|&t| fedpace_data::shakespeare::VOCAB.as_bytes()[t as usize] as char)
                .collect();
            let at = text.find(&window).unwrap();
            assert_eq!(d.label(i), id(text.as_bytes()[at + 8] as char));
        }
    }
}

#[test]
fn bad_leaf_files_name_the_file_the_user_and_the_sample() {
    let d = tmp("leaf");
    let cases = [
        (
            r#"{"users": ["a"], "num_samples": [2], "user_data": {"a": {"x": [[1, 2]], "y": [0]}}}"#,
            "user 'a': num_samples says 2, x has 1, y has 1",
        ),
        (
            r#"{"users": ["a"], "num_samples": [2], "user_data": {"a": {"x": [[1, 2], [3]], "y": [0, 1]}}}"#,
            "user 'a', sample 1: 1 values, expected 2 like the first sample",
        ),
        (
            r#"{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [[1, 2]], "y": [4294967295]}}}"#,
            "user 'a', sample 0: label 4294967295: class ids are whole numbers in 0..100000",
        ),
        (
            r#"{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [[1e39]], "y": [0]}}}"#,
            "not a LEAF JSON file: value 1e39 is not a finite f32",
        ),
        (
            r#"{"users": ["a"], "num_samples": [1]"#,
            "not a LEAF JSON file: EOF while parsing",
        ),
        (
            r#"{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": ["héllo"], "y": ["x"]}}}"#,
            "user 'a', sample 0: character 'é' is not in the 80-symbol vocabulary",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let f = d.join(format!("bad{i}.json"));
        std::fs::write(&f, body).unwrap();
        let cfg = DataConfig::Leaf(LeafSourceConfig::new(&f));
        let e = build(&cfg, 0, Path::new("data")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", f.display())), "{e}");
        assert!(e.contains(want), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn image_folders_are_classes_decoded_channel_major() {
    let cfg = DataConfig::Images(ImagesSourceConfig {
        images: Some(ImagesConfig {
            path: fixture("images/train"),
            test_path: Some(fixture("images/test")),
            grayscale: false,
            resize: None,
        }),
        num_clients: 3,
        test_fraction: Some(0.0),
        ..Default::default()
    });
    let fed = build(&cfg, 0, Path::new("data")).unwrap();
    assert_eq!(fed.sample_shape, InputShape::Dense(vec![3, 4, 6]));
    assert_eq!(fed.num_classes, 3);
    let all = everything(&fed);
    assert_eq!(all.len(), 18);
    // PNG pixels exactly: image i of class c has R = 40c + 10i + row, G = … + col,
    // B = 200 − row.
    let png = |c: usize, i: usize| -> Vec<f32> {
        let mut v = vec![0.0; 72];
        for r in 0..4 {
            for col in 0..6 {
                let p = r * 6 + col;
                v[p] = (40 * c + 10 * i + r) as f32 / 255.0;
                v[24 + p] = (40 * c + 10 * i + col) as f32 / 255.0;
                v[48 + p] = (200 - r) as f32 / 255.0;
            }
        }
        v
    };
    for c in 0..3 {
        for i in 0..4 {
            assert!(all.contains(&(png(c, i), c as u32)), "class {c} image {i}");
        }
    }
    let test = fed.global_test.unwrap();
    assert_eq!((test.len(), test.label(0), test.label(1)), (2, 0, 2));
    // Grayscale and resized.
    let cfg = DataConfig::Images(ImagesSourceConfig {
        images: Some(ImagesConfig {
            path: fixture("images/train"),
            test_path: None,
            grayscale: true,
            resize: Some([2, 3]),
        }),
        num_clients: 2,
        ..Default::default()
    });
    let fed = build(&cfg, 0, Path::new("data")).unwrap();
    assert_eq!(fed.sample_shape, InputShape::Dense(vec![1, 2, 3]));
    // Against Pillow's `convert("L").resize((3, 2), BILINEAR)` of class c's image 3,
    // which rounds to u8 after each step: within 1.5/255.
    let pillow: Vec<f32> = serde_json::from_str::<Vec<u8>>(
        &std::fs::read_to_string(fixture("images/pillow-gray-2x3.json")).unwrap(),
    )
    .unwrap()
    .iter()
    .map(|&v| v as f32 / 255.0)
    .collect();
    let all = everything(&fed);
    let ours = all
        .iter()
        .filter(|(_, y)| *y == 2)
        .map(|(x, _)| x)
        .min_by(|a, b| {
            let d = |x: &Vec<f32>| {
                x.iter()
                    .zip(&pillow)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max)
            };
            d(a).partial_cmp(&d(b)).unwrap()
        })
        .unwrap();
    for (o, p) in ours.iter().zip(&pillow) {
        assert!(
            (o - p).abs() <= 1.5 / 255.0,
            "ours {ours:?} Pillow {pillow:?}"
        );
    }
}

#[test]
fn bad_images_are_errors_naming_the_file() {
    let d = tmp("img");
    std::fs::create_dir_all(d.join("a")).unwrap();
    std::fs::create_dir_all(d.join("b")).unwrap();
    std::fs::copy(fixture("images/train/a/00.png"), d.join("a/0.png")).unwrap();
    std::fs::write(d.join("a/.DS_Store"), b"ignored").unwrap();
    let bytes = std::fs::read(fixture("images/train/b/00.png")).unwrap();
    std::fs::write(d.join("b/0.png"), &bytes[..bytes.len() / 2]).unwrap();
    let cfg = |p: &Path| {
        DataConfig::Images(ImagesSourceConfig {
            images: Some(ImagesConfig {
                path: p.to_path_buf(),
                test_path: None,
                grayscale: false,
                resize: None,
            }),
            num_clients: 1,
            ..Default::default()
        })
    };
    let e = build(&cfg(&d), 0, Path::new("data"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: cannot decode", d.join("b/0.png").display())),
        "{e}"
    );
    std::fs::write(d.join("b/0.png"), &bytes).unwrap();
    std::fs::write(d.join("b/notes.txt"), b"x").unwrap();
    let e = build(&cfg(&d), 0, Path::new("data"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: not a .png", d.join("b/notes.txt").display())),
        "{e}"
    );
    std::fs::remove_file(d.join("b/notes.txt")).unwrap();
    // Another size without `resize`.
    let file = std::fs::File::create(d.join("b/1.png")).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 5, 5);
    enc.set_color(png::ColorType::Grayscale);
    enc.write_header()
        .unwrap()
        .write_image_data(&[7; 25])
        .unwrap();
    let e = build(&cfg(&d), 0, Path::new("data"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("5×5 pixels, but") && e.contains("set data.images.resize"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A client bringing its own file (`fedpace client --data`) gets, as client k, the same
/// training, validation and test samples in the same order as client k of the
/// simulation that reads every client's file (`npy.clients`) with the same seed and
/// fractions; a label the model cannot output and a truncated file are one-line errors
/// naming the file.
#[test]
fn own_file_of_client_k_splits_as_the_simulation_splits_client_k() {
    use fedpace_data::{own_federation, OwnData, OwnFormat};
    let mut npy = NpyConfig::new("unused");
    npy.path = None;
    npy.clients = Some(fixture("npy/clients"));
    let cfg = DataConfig::Npy(NpySourceConfig {
        npy: Some(npy),
        test_fraction: Some(0.2),
        validation_fraction: Some(0.25),
        ..Default::default()
    });
    let sim = build(&cfg, 5, Path::new("data")).unwrap();
    let all = |d: &dyn Dataset| -> Vec<(Vec<f32>, u32)> {
        (0..d.len()).map(|i| (dense(d, i), d.label(i))).collect()
    };
    for k in 0..4 {
        let own = OwnData {
            format: OwnFormat::Npy,
            path: fixture(&format!("npy/clients/client-{k}.npz")),
            labels: None,
            role: None,
        };
        let fed = own_federation(&own, &cfg, k, 2, 5).unwrap();
        let (a, b) = (sim.data.client(k).unwrap(), fed.data.client(k).unwrap());
        assert_eq!(all(a.train.as_ref()), all(b.train.as_ref()), "client {k}");
        assert_eq!(all(a.test.as_ref()), all(b.test.as_ref()), "client {k}");
        let (va, vb) = (a.validation.unwrap(), b.validation.unwrap());
        assert!(!va.is_empty());
        assert_eq!(all(va.as_ref()), all(vb.as_ref()), "client {k}");
        assert_eq!(fed.sample_shape, sim.sample_shape);
    }
    let own = OwnData {
        format: OwnFormat::Npy,
        path: fixture("npy/clients/client-0.npz"),
        labels: None,
        role: None,
    };
    let e = own_federation(&own, &cfg, 0, 1, 5).unwrap_err().to_string();
    assert!(e.contains("client-0.npz") && e.contains("label 1"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let d = tmp("own");
    let cut = d.join("cut.npz");
    let b = std::fs::read(fixture("npy/clients/client-0.npz")).unwrap();
    std::fs::write(&cut, &b[..b.len() / 2]).unwrap();
    let own = OwnData {
        path: cut.clone(),
        ..own
    };
    let e = own_federation(&own, &cfg, 0, 2, 5).unwrap_err().to_string();
    assert!(e.contains("cut.npz"), "{e}");
    assert_eq!(e.lines().count(), 1);
    std::fs::remove_dir_all(&d).ok();
}

/// `export` writes each client of a federation (here FedProx Synthetic(1,1), split 90/10
/// with validation splits) so that the client's own split of its file is, sample for
/// sample, what the simulation gives that client.
#[test]
fn exported_client_files_split_back_into_the_simulation_splits() {
    use fedpace_data::{own_federation, OwnData, OwnFormat};
    let cfg = DataConfig::synthetic(1.0, 1.0)
        .with_num_clients(5)
        .with_validation_fraction(0.2);
    let d = tmp("export");
    let files = fedpace_data::own::export(&cfg, 3, Path::new("data"), &d).unwrap();
    assert_eq!(files.len(), 5);
    let sim = build(&cfg, 3, Path::new("data")).unwrap();
    let all = |d: &dyn Dataset| -> Vec<(Vec<f32>, u32)> {
        (0..d.len()).map(|i| (dense(d, i), d.label(i))).collect()
    };
    for (k, f) in files.iter().enumerate() {
        let own = OwnData {
            format: OwnFormat::Npy,
            path: f.clone(),
            labels: None,
            role: None,
        };
        let fed = own_federation(&own, &cfg, k, 10, 3).unwrap();
        let (a, b) = (sim.data.client(k).unwrap(), fed.data.client(k).unwrap());
        assert_eq!(all(a.train.as_ref()), all(b.train.as_ref()), "client {k}");
        assert_eq!(all(a.test.as_ref()), all(b.test.as_ref()), "client {k}");
        let (va, vb) = (a.validation.unwrap(), b.validation.unwrap());
        assert_eq!(all(va.as_ref()), all(vb.as_ref()), "client {k}");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// One client's samples written three ways — an IDX image file and its label file
/// (u8 pixels, read as p/255), a CSV file of those values with a header and the label
/// last, and an `.npz` — give that client the same training, validation and test
/// samples in the same order: the split depends on the samples' order and number, not
/// on the format. A CSV row with a field missing, and IDX labels for fewer images than
/// there are, are one-line errors naming the file.
#[test]
fn idx_csv_and_npz_files_of_the_same_samples_split_alike() {
    use fedpace_data::own::{npy_bytes, write_npz};
    use fedpace_data::{own_federation, OwnData, OwnFormat};
    let d = tmp("formats");
    let (n, rows, cols, classes) = (40usize, 2usize, 3usize, 4usize);
    let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % classes) as u8).collect();
    // IDX: magic (0, 0, type 0x08 = u8, dimensions), big-endian sizes, then the data.
    let idx = |dims: &[usize], data: &[u8]| {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for &x in dims {
            out.extend_from_slice(&(x as u32).to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    };
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        idx(&[n, rows, cols], &pixels),
    )
    .unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[n], &labels)).unwrap();
    let values: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let mut csv = (0..rows * cols)
        .map(|j| format!("p{j}"))
        .collect::<Vec<_>>()
        .join(",");
    csv.push_str(",label\n");
    for i in 0..n {
        for v in &values[i * rows * cols..(i + 1) * rows * cols] {
            csv.push_str(&format!("{v},"));
        }
        csv.push_str(&format!("{}\n", labels[i]));
    }
    std::fs::write(d.join("own.csv"), &csv).unwrap();
    let x: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let y: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    write_npz(
        &d.join("own.npz"),
        &[
            ("x", npy_bytes("<f4", &[n, rows * cols], &x)),
            ("y", npy_bytes("<i8", &[n], &y)),
        ],
    )
    .unwrap();

    let base = DataConfig::synthetic(1.0, 1.0)
        .with_test_fraction(0.2)
        .with_validation_fraction(0.25);
    let own = |format, path: &str, labels: Option<&str>| OwnData {
        format,
        path: d.join(path),
        labels: labels.map(|l| d.join(l)),
        role: None,
    };
    let all = |dset: &dyn Dataset| -> Vec<(Vec<f32>, u32)> {
        (0..dset.len())
            .map(|i| (dense(dset, i), dset.label(i)))
            .collect()
    };
    let client = 3;
    let splits = |o: &OwnData| {
        let fed = own_federation(o, &base, client, classes, 9).unwrap();
        let c = fed.data.client(client).unwrap();
        let v = c.validation.clone().unwrap();
        (all(c.train.as_ref()), all(v.as_ref()), all(c.test.as_ref()))
    };
    let from_npz = splits(&own(OwnFormat::Npy, "own.npz", None));
    let from_csv = splits(&own(OwnFormat::Csv, "own.csv", None));
    let from_idx = splits(&own(
        OwnFormat::Idx,
        "train-images-idx3-ubyte",
        Some("train-labels-idx1-ubyte"),
    ));
    // ⌊0.8 · 40⌋ = 32 training samples before validation takes its quarter.
    assert_eq!(from_npz.0.len() + from_npz.1.len(), 32);
    assert_eq!(from_npz.2.len(), 8);
    assert!(!from_npz.1.is_empty());
    assert_eq!(from_csv, from_npz, "CSV against npz");
    assert_eq!(from_idx, from_npz, "IDX against npz");
    // Every sample is there once, with its label.
    let mut seen: Vec<(Vec<f32>, u32)> = [&from_idx.0, &from_idx.1, &from_idx.2]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want: Vec<(Vec<f32>, u32)> = (0..n)
        .map(|i| {
            (
                values[i * rows * cols..(i + 1) * rows * cols].to_vec(),
                labels[i] as u32,
            )
        })
        .collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(seen, want);

    // Bad files: one line naming the file.
    // A row of two fields after the header.
    let short = csv.replacen("\n", "\n1,2\n", 1);
    std::fs::write(d.join("short.csv"), short).unwrap();
    std::fs::write(d.join("few-labels-idx1-ubyte"), idx(&[n - 1], &labels[1..])).unwrap();
    for (o, file) in [
        (own(OwnFormat::Csv, "short.csv", None), "short.csv"),
        (
            own(
                OwnFormat::Idx,
                "train-images-idx3-ubyte",
                Some("few-labels-idx1-ubyte"),
            ),
            "few-labels-idx1-ubyte",
        ),
    ] {
        let e = own_federation(&o, &base, client, classes, 9)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains(file), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    std::fs::remove_dir_all(&d).ok();
}
