//! The checkpoint store a daemon's programs share: the SQLite file, or a PostgreSQL database.

use std::sync::Arc;

use super::config::DaemonConfig;
use super::error::DaemonError;
use crate::engine::{PersistError, Persister, SqlitePersister};

/// Opens the configured store for a program in `role` (a worker, the command line), as the
/// program names itself to others that find its processes held.
pub(crate) fn open(config: &DaemonConfig, role: &str) -> Result<Arc<dyn Persister>, DaemonError> {
    let failed = |source: PersistError| DaemonError::Store {
        at: config.store_shown(),
        source,
    };
    match &config.store_url {
        None => Ok(Arc::new(
            SqlitePersister::open(&config.store).map_err(failed)?,
        )),
        Some(url) => open_postgres(config, url, role).map_err(failed),
    }
}

#[cfg(feature = "postgres")]
fn open_postgres(
    config: &DaemonConfig,
    url: &str,
    role: &str,
) -> Result<Arc<dyn Persister>, PersistError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let store = crate::engine::PostgresPersister::builder(url)
        .schema(config.store_schema.clone())
        .owner_name(format!(
            "{} {role} on {host}, pid {}",
            config.prefix,
            std::process::id()
        ))
        .connect()?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_: &DaemonConfig, _: &str, _: &str) -> Result<Arc<dyn Persister>, PersistError> {
    Err(PersistError::store_failed(
        "store_url names a PostgreSQL database, but this program was built without the \
         runtime-thread feature `postgres`",
    ))
}
