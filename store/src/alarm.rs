//! Alarms (NOSPACE, CORRUPT): replicated state, raised and cleared through the log.
//!
//! While a NOSPACE alarm is raised, commands that add data are refused with etcd's
//! "database space exceeded" while reads, deletes and compaction go on; disarming clears it.

use std::collections::BTreeSet;

use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use parking_lot::RwLock;

use crate::backend::{Backend, WriteBatch};
use crate::error::Result;
use crate::keys;

pub(crate) struct Alarms {
    set: RwLock<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    pub(crate) fn open(backend: &dyn Backend) -> Result<Alarms> {
        let mut set = BTreeSet::new();
        for item in backend.scan(&[keys::ALARM_PREFIX], &keys::space_end(keys::ALARM_PREFIX)) {
            let (k, v) = item?;
            keys::unframe(&"alarm", &v)?;
            set.insert(keys::decode_alarm_key(&k)?);
        }
        Ok(Alarms {
            set: RwLock::new(set),
        })
    }

    /// Takes `fresh`'s alarms in place (a restore), so every holder sees them.
    pub(crate) fn replace(&self, fresh: Alarms) {
        *self.set.write() = fresh.set.into_inner();
    }

    pub(crate) fn list(&self) -> Vec<AlarmMember> {
        self.set
            .read()
            .iter()
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    pub(crate) fn is_raised(&self, t: AlarmType) -> bool {
        self.set.read().iter().any(|&(_, a)| a == t as i32)
    }

    /// Applies an ACTIVATE or DEACTIVATE (GET is answered locally, never proposed). The
    /// response lists the alarm changed, as etcd's does.
    pub(crate) fn apply(&self, r: &AlarmRequest, batch: &mut WriteBatch) -> Result<AlarmResponse> {
        let mut set = self.set.write();
        let entry = (r.member_id, r.alarm);
        let mut changed = Vec::new();
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => {
                if set.insert(entry) {
                    batch.put(keys::alarm_key(r.member_id, r.alarm), keys::frame(&[]));
                }
                changed.push(AlarmMember {
                    member_id: r.member_id,
                    alarm: r.alarm,
                });
            }
            Ok(AlarmAction::Deactivate) => {
                let matching: Vec<(u64, i32)> = set
                    .iter()
                    .copied()
                    .filter(|&(m, a)| (r.member_id == 0 || m == r.member_id) && a == r.alarm)
                    .collect();
                for (m, a) in matching {
                    set.remove(&(m, a));
                    batch.delete(keys::alarm_key(m, a));
                    changed.push(AlarmMember {
                        member_id: m,
                        alarm: a,
                    });
                }
            }
            _ => {}
        }
        Ok(AlarmResponse {
            header: None,
            alarms: changed,
        })
    }
}
