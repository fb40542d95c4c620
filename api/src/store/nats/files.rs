//! Files: bytes in the object store, records in a bucket; both expire with the file TTL.

use async_nats::jetstream::object_store::GetErrorKind;
use tokio::io::AsyncReadExt;

use super::{Inner, err};
use crate::store::{FileRecord, StoreError};

impl Inner {
    pub(super) async fn put_file(
        &self,
        record: FileRecord,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.files
            .put(record.id.as_str(), &mut bytes.as_slice())
            .await
            .map_err(err("storing a file"))?;
        // The record last: a reader that finds it finds the bytes.
        self.file_records
            .put(&record.id, serde_json::to_vec(&record)?.into())
            .await
            .map_err(err("storing a file record"))?;
        Ok(())
    }

    pub(super) async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let value = self
            .file_records
            .get(id)
            .await
            .map_err(err("reading a file record"))?;
        value
            .map(|v| serde_json::from_slice(&v).map_err(StoreError::from))
            .transpose()
    }

    pub(super) async fn read_file(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut object = match self.files.get(id).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("reading a file")(e)),
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(err("reading a file"))?;
        Ok(Some(bytes))
    }
}
