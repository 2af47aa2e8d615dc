//! Reading a config file, with libvirt's size limit.

use std::io::Read;
use std::path::Path;

use crate::error::ConfError;

/// Largest config file read, as libvirt's `MAX_CONFIG_FILE_SIZE` (10 MiB).
pub const MAX_CONFIG_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Reads a whole config file, refusing files over [`MAX_CONFIG_FILE_SIZE`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfError> {
    let io_err = |source| ConfError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_SIZE {
        let msg = format!("file is larger than {MAX_CONFIG_FILE_SIZE} bytes");
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            msg,
        )));
    }
    Ok(bytes)
}
