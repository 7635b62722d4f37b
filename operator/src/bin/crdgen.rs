//! Writes the CRDs of the guildnet.io API as YAML, one file per kind, into the directory
//! given as the first argument (default `crds`), and the CRD reference into the file given
//! as the second (default `docs/crd-reference.md`). `make crds` runs it; tests fail when the
//! committed files differ from what it writes.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in guildnet_operator::crd_files()? {
        std::fs::write(dir.join(&file), yaml)?;
        println!("wrote {}", dir.join(file).display());
    }
    let reference = PathBuf::from(
        std::env::args()
            .nth(2)
            .unwrap_or_else(|| "docs/crd-reference.md".into()),
    );
    std::fs::write(&reference, guildnet_operator::reference::crd_reference())?;
    println!("wrote {}", reference.display());
    Ok(())
}
