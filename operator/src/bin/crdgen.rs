//! Writes the CRDs of the guildnet.io API as YAML, one file per kind, into the directory
//! given as the first argument (default `crds`). `make crds` runs it; a test fails when the
//! committed files differ from what it writes.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in guildnet_operator::crd_files()? {
        std::fs::write(dir.join(&file), yaml)?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
