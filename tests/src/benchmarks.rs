//! Where the benchmark binaries write their figures: a section of
//! `BENCHMARKS.md` between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
//! (replaced in place, or added at the end), or, for a `--quick` run, a file
//! of its own under `target/` (its figures are not comparable).

use std::path::{Path, PathBuf};

/// Writes `md` (which starts with the begin marker and ends with the end
/// marker of `name`) for the workspace at `root`; answers the file written.
pub fn write_section(root: &Path, name: &str, md: &str, quick: bool) -> std::io::Result<PathBuf> {
    if quick {
        let path = root.join(format!("target/BENCHMARKS.{}.quick.md", name.trim_end_matches("-bench")));
        std::fs::write(&path, md)?;
        return Ok(path);
    }
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, replace_section(&old, name, md))?;
    Ok(path)
}

/// `old` with the section `name` replaced by `md` (or `md` appended).
pub fn replace_section(old: &str, name: &str, md: &str) -> String {
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], md.trim_end(), &old[b + end.len()..]),
        _ => format!("{}\n\n{}\n", old.trim_end(), md.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_or_added() {
        let old = "# B\n\n<!-- x:begin -->\nold\n<!-- x:end -->\n\ntail\n";
        let md = "<!-- x:begin -->\nnew\n<!-- x:end -->\n";
        assert_eq!(replace_section(old, "x", md), "# B\n\n<!-- x:begin -->\nnew\n<!-- x:end -->\n\ntail\n");
        assert_eq!(
            replace_section("# B\n", "y", "<!-- y:begin -->\n<!-- y:end -->"),
            "# B\n\n<!-- y:begin -->\n<!-- y:end -->\n"
        );
    }
}
