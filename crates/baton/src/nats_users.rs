//! `baton nats-auth --write DIR`: the NATS users of every role kept in a directory, the way the
//! operator keeps them in a Secret ([`baton_operator::nats_auth`], the same rendering): a
//! password file per role, kept across runs, and `auth.conf` with bcrypt hashes. Files that
//! did not change are not rewritten; a removed pool's password file is deleted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use baton_operator::nats_auth::{BCRYPT_COST, new_password, render};
use baton_queue::permissions::Role;

/// Bring `dir` in step with `roles`.
pub(crate) fn write(dir: &Path, roles: &[Role]) -> anyhow::Result<()> {
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut current = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            current.insert(name.to_owned(), std::fs::read(entry.path())?);
        }
    }
    let next = render(roles, &current, BCRYPT_COST, new_password)?;
    for (name, content) in &next {
        if current.get(name) != Some(content) {
            write_private(&dir.join(name), content)
                .with_context(|| format!("writing {}", dir.join(name).display()))?;
        }
    }
    // Password files of roles that are gone (a deleted pool).
    for name in current.keys() {
        if name.starts_with("worker-") && !next.contains_key(name) {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
