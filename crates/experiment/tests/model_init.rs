//! `[model] init = "FILE.safetensors"` (docs/configuration.md, docs/checkpoints.md): a
//! run starts from saved weights — a run's own `model.safetensors` included — and a
//! file that does not fit the model is refused before anything runs, naming the tensor.

use fedpace_experiment::output::{tree_tensors, write_safetensors};
use fedpace_experiment::{Experiment, RunOptions};
use std::path::Path;

const MLP: &str = r#"
rounds = 2
seed = 4
[data]
source = "synthetic"
num_clients = 6
[model]
name = "mlp"
hidden = [8]
[strategy]
clients_per_round = 3
[eval]
every = 0
finetune_steps = 0
"#;

fn with_init(path: &Path) -> Experiment {
    let set = format!("model.init={:?}", path.display().to_string());
    Experiment::from_toml_str(MLP, "mlp.toml", &[set]).unwrap()
}

fn setup_error(path: &Path) -> String {
    let e = with_init(path).prepare().err().expect("refused");
    assert!(e.is_usage(), "{e}");
    let e = e.to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

#[test]
fn a_run_starts_from_the_weights_of_a_saved_model() {
    let tmp = tempfile::tempdir().unwrap();
    // The model a first run ends with is the model the second starts from.
    let first = Experiment::from_toml_str(MLP, "mlp.toml", &[])
        .unwrap()
        .run(RunOptions::default().with_dir(tmp.path().join("first")))
        .unwrap();
    let saved = tmp.path().join("first/model.safetensors");
    let exp = with_init(&saved);
    let p = exp.prepare().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(p.initial_model().as_slice()),
        bits(first.model().as_slice())
    );
    let fresh = Experiment::from_toml_str(MLP, "mlp.toml", &[])
        .unwrap()
        .prepare()
        .unwrap();
    assert_ne!(
        bits(p.initial_model().as_slice()),
        bits(fresh.initial_model().as_slice())
    );
    // The resolved config keeps the (absolute) path, so the run directory says where
    // its weights came from and `fedpace resume` finds them from anywhere.
    let toml = exp.config().to_toml();
    assert!(
        toml.contains(&format!("init = {:?}", saved.display().to_string())),
        "{toml}"
    );
    let again = Experiment::from_toml_str(&toml, "config.toml", &[]).unwrap();
    assert_eq!(again.config().model_init.as_deref(), Some(saved.as_path()));
}

#[test]
fn init_weights_that_do_not_fit_the_model_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let good = Experiment::from_toml_str(MLP, "mlp.toml", &[])
        .unwrap()
        .prepare()
        .unwrap();
    let tree = good.initial_model();
    let mut tensors = tree_tensors("", tree);
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    assert_eq!(names[0], "fc1.weight");

    let wrong_shape = tmp.path().join("shape.safetensors");
    let mut t = tensors.clone();
    let n = t[0].2.len();
    t[0].1 = vec![n];
    write_safetensors(&wrong_shape, &t).unwrap();
    let e = setup_error(&wrong_shape);
    assert!(
        e.contains("shape.safetensors: tensor \"fc1.weight\" has shape")
            && e.contains("the model's is [8, "),
        "{e}"
    );

    let missing = tmp.path().join("missing.safetensors");
    write_safetensors(&missing, &tensors[1..]).unwrap();
    let e = setup_error(&missing);
    assert!(e.contains("no tensor \"fc1.weight\""), "{e}");

    let extra = tmp.path().join("extra.safetensors");
    let more = vec![1.0f32; 3];
    tensors.push(("fc3.weight".into(), vec![3], &more));
    write_safetensors(&extra, &tensors).unwrap();
    let e = setup_error(&extra);
    assert!(e.contains("the model does not have: fc3.weight"), "{e}");

    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x05\x00\x00\x00\x00\x00\x00\x00{junk").unwrap();
    let e = setup_error(&junk);
    assert!(
        e.contains("junk.safetensors: not a safetensors file"),
        "{e}"
    );

    let e = setup_error(&tmp.path().join("nowhere.safetensors"));
    assert!(e.contains("nowhere.safetensors: cannot read"), "{e}");

    let e = Experiment::from_toml_str(MLP, "mlp.toml", &["model.init=3".into()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.init = 3: expected the path of a safetensors file"),
        "{e}"
    );
}
