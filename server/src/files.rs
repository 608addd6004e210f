//! Writing the files the tools make (`certs`, `split`): secret ones
//! (private keys, weight shares) are created readable by their owner only.

use std::io::Write;
use std::path::Path;

use crate::error::ServerError;

/// Write `bytes` to `path`. A `secret` file is created with mode 0600 (set
/// at creation, so it is never readable by others, not even for a moment);
/// an existing file there is removed first, since opening it would keep
/// its old mode.
pub fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), ServerError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("replacing", path, e)),
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(path)
        .map_err(|e| ServerError::io("writing", path, e))?;
    f.write_all(bytes)
        .map_err(|e| ServerError::io("writing", path, e))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secret_files_are_0600_even_over_a_readable_file() {
        let dir = std::env::temp_dir().join(format!("mpcvit-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secret");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&p, b"new", true).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let q = dir.join("public");
        write_file(&q, b"x", false).unwrap();
        assert_ne!(mode(&q) & 0o044, 0, "public files keep the umask's mode");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
