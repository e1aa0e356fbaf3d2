//! A small in-memory store behind [`Apply`], for tests: a key-value map that really applies
//! puts, keeps the raft blob with its data, and snapshots and restores both together.

use std::collections::BTreeMap;

use keelson_proto::etcdserverpb::{PutResponse, ResponseHeader};
use keelson_store::{ApplyResponse, Command, Error};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::state_machine::Apply;

#[derive(Default)]
pub(crate) struct MemStore {
    state: Mutex<MemState>,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct MemState {
    /// Keys as text: the snapshot is json, whose map keys are strings.
    kv: BTreeMap<String, Vec<u8>>,
    revision: i64,
    /// The last applied log index, to check commands arrive in log order.
    index: u64,
    applied: Option<Vec<u8>>,
}

impl MemStore {
    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.state
            .lock()
            .kv
            .get(&*String::from_utf8_lossy(key))
            .cloned()
    }

    pub(crate) fn revision(&self) -> i64 {
        self.state.lock().revision
    }
}

impl Apply for MemStore {
    fn apply(
        &self,
        commands: Vec<(u64, Command)>,
        applied: Vec<u8>,
    ) -> keelson_store::Result<Vec<keelson_store::Result<ApplyResponse>>> {
        let mut st = self.state.lock();
        let mut out = Vec::with_capacity(commands.len());
        for (index, cmd) in commands {
            assert!(index > st.index, "commands applied in log order");
            st.index = index;
            out.push(match cmd {
                Command::Put(p) if p.key.is_empty() => Err(Error::EmptyKey),
                Command::Put(p) => {
                    st.revision += 1;
                    st.kv.insert(
                        String::from_utf8_lossy(&p.key).into_owned(),
                        p.value.to_vec(),
                    );
                    Ok(ApplyResponse::Put(PutResponse {
                        header: Some(ResponseHeader {
                            revision: st.revision,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    }))
                }
                other => Err(Error::Unimplemented(format!("mem store: {other:?}"))),
            });
        }
        st.applied = Some(applied);
        Ok(out)
    }

    fn applied(&self) -> keelson_store::Result<Option<Vec<u8>>> {
        Ok(self.state.lock().applied.clone())
    }

    fn snapshot(&self) -> keelson_store::Result<(Option<Vec<u8>>, Vec<u8>)> {
        let st = self.state.lock();
        let data = serde_json::to_vec(&*st).map_err(|e| Error::Io(e.to_string()))?;
        Ok((st.applied.clone(), data))
    }

    fn restore(&self, snapshot: &[u8]) -> keelson_store::Result<()> {
        let st: MemState =
            serde_json::from_slice(snapshot).map_err(|e| Error::Corrupt(e.to_string()))?;
        *self.state.lock() = st;
        Ok(())
    }

    fn flush(&self) -> keelson_store::Result<()> {
        Ok(())
    }
}
